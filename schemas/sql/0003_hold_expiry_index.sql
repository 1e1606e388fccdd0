-- Lets the authorizer find wallets whose holds have aged out even when no message arrives for them.
ALTER TABLE authorizer.wallet_state ADD COLUMN earliest_hold_expiry timestamptz;
CREATE INDEX wallet_state_hold_expiry ON authorizer.wallet_state (earliest_hold_expiry)
    WHERE earliest_hold_expiry IS NOT NULL;

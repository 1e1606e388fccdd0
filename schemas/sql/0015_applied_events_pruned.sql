-- Issuer events applied are remembered (for applying each once) only as long as one can come again:
-- Kafka keeps a topic 7 days (a consumer reading from an older offset sees them again) and Stripe
-- retries a webhook for up to 3 days. They were kept forever, a row per issuer event; now the
-- authorizer deletes those applied more than 14 days ago, beside its batches, through this index
-- (decision 0005).
CREATE INDEX applied_events_applied_at ON authorizer.applied_events (applied_at);

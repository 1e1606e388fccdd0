-- Money the issuer moved without our approval that pushed a cap over its limit (`cap_breached_by_issuer`:
-- a force capture, a stand-in, an increment approved without us) is said in the wallet's Slack channel.
-- It is a notice, not an approval request (the money has moved: there is nothing to approve), so an
-- outbox row is either a request's or a notice's, once per breach event (`notice_id`, its event id).
ALTER TABLE notifier.slack_outbox ALTER COLUMN request_id DROP NOT NULL;
ALTER TABLE notifier.slack_outbox ADD COLUMN notice_id uuid UNIQUE;
ALTER TABLE notifier.slack_outbox ADD CONSTRAINT slack_outbox_request_or_notice
    CHECK ((request_id IS NOT NULL) <> (notice_id IS NOT NULL) AND (notice_id IS NULL OR method = 'chat.postMessage'));

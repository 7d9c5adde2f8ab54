-- calsync.conf.lua -- sample configuration (calsync.conf(5)).
-- Lua, evaluated with no libraries: it sets globals. Relative paths are
-- relative to this file's directory. Unknown keys are errors.

-- The API port. Loopback needs no token; any other address requires
-- api_token (calsync refuses to start without one).
listen = "127.0.0.1:8080"

-- Where Google sends push notifications: must be HTTPS and reachable from
-- the internet (docs/google-setup.md). Without it calsync polls only.
public_url = "https://calsync.example.com"

-- The systemd unit's StateDirectory (calsync.service).
database = "/var/lib/calsync/calsync.db"

-- Omitted: the policies installed with calsync (<prefix>/share/calsync/policies).
-- policies = "/etc/calsync/policies"

-- Secrets stay out of this file: from the environment, or from files such
-- as systemd credentials (LoadCredential= in calsync.service). Required as
-- soon as listen is not a loopback address:
-- api_token = env("CALSYNC_API_TOKEN")
-- api_token = file(env("CREDENTIALS_DIRECTORY") .. "/api_token")

google = {
    client_id = env("CALSYNC_GOOGLE_CLIENT_ID", ""),
    client_secret = env("CALSYNC_GOOGLE_CLIENT_SECRET", ""),
}

-- The booking app's webhook endpoint(s), each with its signing secret.
-- webhooks = { { url = "https://app.example.com/api/calsync", secret = env("CALSYNC_WEBHOOK_SECRET") } }

poll_interval = 600

-- How long finished rows are kept, in seconds (0: forever). The audit --
-- every decision and its inputs -- is kept unless audit is set.
-- retention = { notifications = 7 * 86400, outbox_delivered = 30 * 86400,
--               jobs_finished = 30 * 86400, audit = 0 }
log_level = "info"
log_format = "text"   -- "json": one JSON object per line

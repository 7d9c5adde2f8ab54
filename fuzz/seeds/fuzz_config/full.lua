listen = "127.0.0.1:0"
database = "/tmp/calsync.db"
policies = "policies"
public_url = "https://sync.example.com"
api_token = "s3cret"
poll_interval = 120
workers = 2
log_level = "debug"
google = { client_id = "id", client_secret = "sec", api_base = "http://127.0.0.1:1/calendar/v3",
           token_url = "http://127.0.0.1:1/token", channel_ttl = 3600, renew_before = 600 }
webhooks = { { url = "http://127.0.0.1:9/hook", secret = "k" }, { url = "https://x", secret = "y" } }
policy_limits = { instructions = 100000, memory = 1048576 }

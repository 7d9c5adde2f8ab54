google = { channel_ttl = 1.5 }

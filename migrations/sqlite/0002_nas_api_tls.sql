-- RouterOS API-SSL (port 8729) per NAS: api_tls selects TLS for the disconnect fallback;
-- api_tls_name is the name the router's certificate must carry (NULL: the NAS's IP address).
ALTER TABLE nas ADD COLUMN api_tls INTEGER NOT NULL DEFAULT 0;
ALTER TABLE nas ADD COLUMN api_tls_name TEXT;

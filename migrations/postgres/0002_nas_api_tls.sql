-- RouterOS API-SSL (port 8729) per NAS: api_tls selects TLS for the disconnect fallback;
-- api_tls_name is the name the router's certificate must carry (NULL: the NAS's IP address).
ALTER TABLE nas ADD COLUMN IF NOT EXISTS api_tls boolean NOT NULL DEFAULT false;
ALTER TABLE nas ADD COLUMN IF NOT EXISTS api_tls_name text;

-- The Debian package a product comes in ('' when not known): the report of licenses
-- counts its installs from the inventory (siteward license report).
ALTER TABLE products ADD COLUMN package TEXT NOT NULL DEFAULT '';

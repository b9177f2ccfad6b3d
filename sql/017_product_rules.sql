-- A product's rules (siteward product set NAME --reserve N --for GROUP, --max N --for
-- GROUP|user:USER|host:HOST), as the JSON list lib/product.c reads:
-- [{"kind": "reserve", "count": 2, "group": "eng"}, ...].
ALTER TABLE products ADD COLUMN rules TEXT NOT NULL DEFAULT '[]';

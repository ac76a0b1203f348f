-- The BI corpus's schema (tests/bi/corpus.sql). `{t}` is the tenant, `{k}` a per-tenant
-- shift of the generated values; ids overlap between tenants, as they do in a shared schema.
CREATE TABLE IF NOT EXISTS customers (tenant_id text NOT NULL, id int NOT NULL, name text,
  email text, country_code text, segment text, signup_date date, is_active bool,
  PRIMARY KEY (tenant_id, id));
CREATE TABLE IF NOT EXISTS products (tenant_id text NOT NULL, id int NOT NULL, name text,
  category text, price numeric(10,2), launched date, PRIMARY KEY (tenant_id, id));
CREATE TABLE IF NOT EXISTS orders (tenant_id text NOT NULL, id int NOT NULL, customer_id int,
  product_id int, status text, quantity int, amount numeric(12,2), discount float8,
  created_at timestamp, shipped_at timestamptz, channel text, PRIMARY KEY (tenant_id, id));
CREATE TABLE IF NOT EXISTS countries (code text PRIMARY KEY, name text, region text);
INSERT INTO countries VALUES ('US', 'United States', 'Americas'), ('DE', 'Germany', 'EMEA'),
  ('FR', 'France', 'EMEA'), ('GB', 'United Kingdom', 'EMEA'), ('JP', 'Japan', 'APAC'),
  ('BR', 'Brazil', 'Americas') ON CONFLICT DO NOTHING;

-- BI-style corpus: queries shaped like what Metabase, Superset, Tableau, Power BI and Looker
-- generate, plus analysts' dashboard SQL, over tests/bi/schema.sql. Each query is one line,
-- preceded by a `-- tool: what` line. proxy/tests/bi_corpus.rs runs every one through sluice
-- (tenant A, the wire door) and on a database holding only A's rows, and compares.

-- metabase: count by orders.status
SELECT "public"."orders"."status" AS "status", count(*) AS "count" FROM "public"."orders" GROUP BY "public"."orders"."status" ORDER BY "public"."orders"."status" ASC;
-- metabase: count by orders.channel
SELECT "public"."orders"."channel" AS "channel", count(*) AS "count" FROM "public"."orders" GROUP BY "public"."orders"."channel" ORDER BY "public"."orders"."channel" ASC;
-- metabase: count by orders.quantity
SELECT "public"."orders"."quantity" AS "quantity", count(*) AS "count" FROM "public"."orders" GROUP BY "public"."orders"."quantity" ORDER BY "public"."orders"."quantity" ASC;
-- metabase: count by customers.segment
SELECT "public"."customers"."segment" AS "segment", count(*) AS "count" FROM "public"."customers" GROUP BY "public"."customers"."segment" ORDER BY "public"."customers"."segment" ASC;
-- metabase: count by customers.country_code
SELECT "public"."customers"."country_code" AS "country_code", count(*) AS "count" FROM "public"."customers" GROUP BY "public"."customers"."country_code" ORDER BY "public"."customers"."country_code" ASC;
-- metabase: count by products.category
SELECT "public"."products"."category" AS "category", count(*) AS "count" FROM "public"."products" GROUP BY "public"."products"."category" ORDER BY "public"."products"."category" ASC;
-- metabase: orders by created_at:day
SELECT date_trunc('day', "public"."orders"."created_at") AS "created_at", count(*) AS "count", sum("public"."orders"."amount") AS "sum" FROM "public"."orders" GROUP BY date_trunc('day', "public"."orders"."created_at") ORDER BY date_trunc('day', "public"."orders"."created_at") ASC;
-- metabase: orders by created_at:week
SELECT date_trunc('week', "public"."orders"."created_at") AS "created_at", count(*) AS "count", sum("public"."orders"."amount") AS "sum" FROM "public"."orders" GROUP BY date_trunc('week', "public"."orders"."created_at") ORDER BY date_trunc('week', "public"."orders"."created_at") ASC;
-- metabase: orders by created_at:month
SELECT date_trunc('month', "public"."orders"."created_at") AS "created_at", count(*) AS "count", sum("public"."orders"."amount") AS "sum" FROM "public"."orders" GROUP BY date_trunc('month', "public"."orders"."created_at") ORDER BY date_trunc('month', "public"."orders"."created_at") ASC;
-- metabase: orders by created_at:quarter
SELECT date_trunc('quarter', "public"."orders"."created_at") AS "created_at", count(*) AS "count", sum("public"."orders"."amount") AS "sum" FROM "public"."orders" GROUP BY date_trunc('quarter', "public"."orders"."created_at") ORDER BY date_trunc('quarter', "public"."orders"."created_at") ASC;
-- metabase: orders by created_at:year
SELECT date_trunc('year', "public"."orders"."created_at") AS "created_at", count(*) AS "count", sum("public"."orders"."amount") AS "sum" FROM "public"."orders" GROUP BY date_trunc('year', "public"."orders"."created_at") ORDER BY date_trunc('year', "public"."orders"."created_at") ASC;
-- metabase: week starting sunday
SELECT CAST((CAST(date_trunc('week', CAST(("public"."orders"."created_at" + INTERVAL '1 day') AS timestamp)) AS timestamp) + INTERVAL '-1 day') AS date) AS "created_at", count(*) AS "count" FROM "public"."orders" GROUP BY CAST((CAST(date_trunc('week', CAST(("public"."orders"."created_at" + INTERVAL '1 day') AS timestamp)) AS timestamp) + INTERVAL '-1 day') AS date) ORDER BY CAST((CAST(date_trunc('week', CAST(("public"."orders"."created_at" + INTERVAL '1 day') AS timestamp)) AS timestamp) + INTERVAL '-1 day') AS date) ASC;
-- metabase: raw rows limit 2000
SELECT "public"."orders"."id" AS "id", "public"."orders"."customer_id" AS "customer_id", "public"."orders"."status" AS "status", "public"."orders"."amount" AS "amount", "public"."orders"."created_at" AS "created_at" FROM "public"."orders" ORDER BY "public"."orders"."id" ASC LIMIT 2000;
-- metabase: raw rows 1048575
SELECT "public"."customers"."id" AS "id", "public"."customers"."name" AS "name", "public"."customers"."email" AS "email", "public"."customers"."signup_date" AS "signup_date", "public"."customers"."is_active" AS "is_active" FROM "public"."customers" LIMIT 1048575;
-- metabase: join customers, group by segment
SELECT "Customers"."segment" AS "Customers__segment", count(*) AS "count", sum("public"."orders"."amount") AS "sum" FROM "public"."orders" LEFT JOIN "public"."customers" AS "Customers" ON "public"."orders"."customer_id" = "Customers"."id" GROUP BY "Customers"."segment" ORDER BY "Customers"."segment" ASC;
-- metabase: join customers, raw
SELECT "public"."orders"."id" AS "id", "public"."orders"."amount" AS "amount", "Customers"."segment" AS "Customers__segment" FROM "public"."orders" LEFT JOIN "public"."customers" AS "Customers" ON "public"."orders"."customer_id" = "Customers"."id" WHERE "public"."orders"."status" = 'paid' ORDER BY "public"."orders"."id" ASC LIMIT 2000;
-- metabase: join products, group by category
SELECT "Products"."category" AS "Products__category", count(*) AS "count", sum("public"."orders"."amount") AS "sum" FROM "public"."orders" LEFT JOIN "public"."products" AS "Products" ON "public"."orders"."product_id" = "Products"."id" GROUP BY "Products"."category" ORDER BY "Products"."category" ASC;
-- metabase: join products, raw
SELECT "public"."orders"."id" AS "id", "public"."orders"."amount" AS "amount", "Products"."category" AS "Products__category" FROM "public"."orders" LEFT JOIN "public"."products" AS "Products" ON "public"."orders"."product_id" = "Products"."id" WHERE "public"."orders"."status" = 'paid' ORDER BY "public"."orders"."id" ASC LIMIT 2000;
-- metabase: two joins, public table
SELECT "Countries"."region" AS "Countries__region", "Products"."category" AS "Products__category", count(*) AS "count" FROM "public"."orders" LEFT JOIN "public"."customers" AS "Customers" ON "public"."orders"."customer_id" = "Customers"."id" LEFT JOIN "public"."countries" AS "Countries" ON "Customers"."country_code" = "Countries"."code" LEFT JOIN "public"."products" AS "Products" ON "public"."orders"."product_id" = "Products"."id" GROUP BY "Countries"."region", "Products"."category" ORDER BY "Countries"."region" ASC, "Products"."category" ASC;
-- metabase: filtered aggregate
SELECT count(*) AS "count", sum("public"."orders"."amount") AS "sum", avg("public"."orders"."quantity") AS "avg" FROM "public"."orders" WHERE "public"."orders"."created_at" >= timestamp '2024-03-01 00:00:00.000' AND "public"."orders"."created_at" < timestamp '2024-06-01 00:00:00.000';
-- metabase: filtered aggregate
SELECT count(*) AS "count", sum("public"."orders"."amount") AS "sum", avg("public"."orders"."quantity") AS "avg" FROM "public"."orders" WHERE "public"."orders"."status" IN ('paid', 'shipped');
-- metabase: filtered aggregate
SELECT count(*) AS "count", sum("public"."orders"."amount") AS "sum", avg("public"."orders"."quantity") AS "avg" FROM "public"."orders" WHERE "public"."orders"."amount" BETWEEN 100 AND 300;
-- metabase: filtered aggregate
SELECT count(*) AS "count", sum("public"."orders"."amount") AS "sum", avg("public"."orders"."quantity") AS "avg" FROM "public"."orders" WHERE ("public"."orders"."discount" IS NULL OR "public"."orders"."discount" = 0);
-- metabase: filtered aggregate
SELECT count(*) AS "count", sum("public"."orders"."amount") AS "sum", avg("public"."orders"."quantity") AS "avg" FROM "public"."orders" WHERE lower("public"."orders"."channel") LIKE '%web%';
-- metabase: filtered aggregate
SELECT count(*) AS "count", sum("public"."orders"."amount") AS "sum", avg("public"."orders"."quantity") AS "avg" FROM "public"."orders" WHERE "public"."orders"."channel" LIKE 'mob%';
-- metabase: filtered aggregate
SELECT count(*) AS "count", sum("public"."orders"."amount") AS "sum", avg("public"."orders"."quantity") AS "avg" FROM "public"."orders" WHERE NOT ("public"."orders"."status" = 'refunded') AND "public"."orders"."quantity" > 2;
-- metabase: filtered aggregate
SELECT count(*) AS "count", sum("public"."orders"."amount") AS "sum", avg("public"."orders"."quantity") AS "avg" FROM "public"."orders" WHERE "public"."orders"."shipped_at" IS NOT NULL AND "public"."orders"."shipped_at" < timestamp with time zone '2024-09-01 00:00:00.000Z';
-- metabase: distinct count
SELECT count(distinct "public"."orders"."customer_id") AS "count" FROM "public"."orders";
-- metabase: cumulative count
SELECT "source"."created_at" AS "created_at", sum("source"."count") OVER (ORDER BY "source"."created_at" ASC ROWS UNBOUNDED PRECEDING) AS "count" FROM (SELECT date_trunc('month', "public"."orders"."created_at") AS "created_at", count(*) AS "count" FROM "public"."orders" GROUP BY date_trunc('month', "public"."orders"."created_at") ORDER BY date_trunc('month', "public"."orders"."created_at") ASC) AS "source" ORDER BY "source"."created_at" ASC;
-- metabase: nested question source
SELECT "source"."status" AS "status", "source"."sum" AS "sum" FROM (SELECT "public"."orders"."status" AS "status", sum("public"."orders"."amount") AS "sum" FROM "public"."orders" GROUP BY "public"."orders"."status") AS "source" WHERE "source"."sum" > 100 ORDER BY "source"."sum" DESC, "source"."status" ASC LIMIT 1048575;
-- metabase: extract hour of day
SELECT CAST(extract(hour from "public"."orders"."created_at") AS integer) AS "created_at", count(*) AS "count" FROM "public"."orders" GROUP BY CAST(extract(hour from "public"."orders"."created_at") AS integer) ORDER BY CAST(extract(hour from "public"."orders"."created_at") AS integer) ASC;
-- metabase: day of week
SELECT CAST(extract(dow from "public"."orders"."created_at") AS integer) + 1 AS "created_at", count(*) AS "count" FROM "public"."orders" GROUP BY CAST(extract(dow from "public"."orders"."created_at") AS integer) + 1 ORDER BY 1 ASC;
-- metabase: binned amount
SELECT (floor((("public"."orders"."amount" - 0.0) / 50.0)) * 50.0) + 0.0 AS "amount", count(*) AS "count" FROM "public"."orders" GROUP BY (floor((("public"."orders"."amount" - 0.0) / 50.0)) * 50.0) + 0.0 ORDER BY 1 ASC;
-- metabase: case custom column
SELECT CASE WHEN "public"."orders"."amount" > 250 THEN 'large' WHEN "public"."orders"."amount" > 100 THEN 'medium' ELSE 'small' END AS "size", count(*) AS "count" FROM "public"."orders" GROUP BY CASE WHEN "public"."orders"."amount" > 250 THEN 'large' WHEN "public"."orders"."amount" > 100 THEN 'medium' ELSE 'small' END ORDER BY 1 ASC;
-- metabase: public table only
SELECT "public"."countries"."code" AS "code", "public"."countries"."name" AS "name" FROM "public"."countries" ORDER BY "public"."countries"."code" ASC LIMIT 2000;
-- metabase: min max
SELECT min("public"."orders"."created_at") AS "min", max("public"."orders"."created_at") AS "max", max("public"."orders"."amount") AS "max_2" FROM "public"."orders";
-- metabase: distinct values for a filter widget
SELECT "public"."orders"."channel" AS "channel" FROM "public"."orders" GROUP BY "public"."orders"."channel" ORDER BY "public"."orders"."channel" ASC LIMIT 1000;
-- metabase: share of total
SELECT "public"."orders"."status" AS "status", sum(CASE WHEN "public"."orders"."quantity" > 2 THEN 1 ELSE 0 END) / count(*) AS "share" FROM "public"."orders" GROUP BY "public"."orders"."status" ORDER BY 1;
-- metabase: segment contains
SELECT count(*) AS "count" FROM "public"."customers" WHERE ("public"."customers"."segment" LIKE '%Market%') AND "public"."customers"."is_active" = TRUE;
-- metabase: relative dates fixed
SELECT count(*) AS "count" FROM "public"."orders" WHERE "public"."orders"."created_at" >= CAST((CAST(timestamp '2024-12-31 00:00:00' AS date) + INTERVAL '-30 day') AS timestamp) AND "public"."orders"."created_at" < CAST(CAST(timestamp '2024-12-31 00:00:00' AS date) AS timestamp);
-- superset: table chart by status
SELECT status AS status, COUNT(*) AS count FROM public.orders GROUP BY status ORDER BY count DESC, status LIMIT 10000;
-- superset: virtual table by status
SELECT status AS status, SUM(amount) AS "SUM(amount)" FROM (SELECT * FROM public.orders WHERE status <> 'pending') AS virtual_table GROUP BY status ORDER BY "SUM(amount)" DESC, status LIMIT 10000;
-- superset: table chart by channel
SELECT channel AS channel, COUNT(*) AS count FROM public.orders GROUP BY channel ORDER BY count DESC, channel LIMIT 10000;
-- superset: virtual table by channel
SELECT channel AS channel, SUM(amount) AS "SUM(amount)" FROM (SELECT * FROM public.orders WHERE status <> 'pending') AS virtual_table GROUP BY channel ORDER BY "SUM(amount)" DESC, channel LIMIT 10000;
-- superset: table chart by quantity
SELECT quantity AS quantity, COUNT(*) AS count FROM public.orders GROUP BY quantity ORDER BY count DESC, quantity LIMIT 10000;
-- superset: virtual table by quantity
SELECT quantity AS quantity, SUM(amount) AS "SUM(amount)" FROM (SELECT * FROM public.orders WHERE status <> 'pending') AS virtual_table GROUP BY quantity ORDER BY "SUM(amount)" DESC, quantity LIMIT 10000;
-- superset: time series P1day
SELECT DATE_TRUNC('day', created_at) AS __timestamp, COUNT(*) AS count, AVG(amount) AS "AVG(amount)" FROM public.orders WHERE created_at >= TO_TIMESTAMP('2024-01-01 00:00:00.000000', 'YYYY-MM-DD HH24:MI:SS.US') AND created_at < TO_TIMESTAMP('2025-01-01 00:00:00.000000', 'YYYY-MM-DD HH24:MI:SS.US') GROUP BY DATE_TRUNC('day', created_at) ORDER BY __timestamp LIMIT 50000;
-- superset: time series P1week
SELECT DATE_TRUNC('week', created_at) AS __timestamp, COUNT(*) AS count, AVG(amount) AS "AVG(amount)" FROM public.orders WHERE created_at >= TO_TIMESTAMP('2024-01-01 00:00:00.000000', 'YYYY-MM-DD HH24:MI:SS.US') AND created_at < TO_TIMESTAMP('2025-01-01 00:00:00.000000', 'YYYY-MM-DD HH24:MI:SS.US') GROUP BY DATE_TRUNC('week', created_at) ORDER BY __timestamp LIMIT 50000;
-- superset: time series P1month
SELECT DATE_TRUNC('month', created_at) AS __timestamp, COUNT(*) AS count, AVG(amount) AS "AVG(amount)" FROM public.orders WHERE created_at >= TO_TIMESTAMP('2024-01-01 00:00:00.000000', 'YYYY-MM-DD HH24:MI:SS.US') AND created_at < TO_TIMESTAMP('2025-01-01 00:00:00.000000', 'YYYY-MM-DD HH24:MI:SS.US') GROUP BY DATE_TRUNC('month', created_at) ORDER BY __timestamp LIMIT 50000;
-- superset: time series P1year
SELECT DATE_TRUNC('year', created_at) AS __timestamp, COUNT(*) AS count, AVG(amount) AS "AVG(amount)" FROM public.orders WHERE created_at >= TO_TIMESTAMP('2024-01-01 00:00:00.000000', 'YYYY-MM-DD HH24:MI:SS.US') AND created_at < TO_TIMESTAMP('2025-01-01 00:00:00.000000', 'YYYY-MM-DD HH24:MI:SS.US') GROUP BY DATE_TRUNC('year', created_at) ORDER BY __timestamp LIMIT 50000;
-- superset: time series with series limit
SELECT DATE_TRUNC('month', created_at) AS __timestamp, channel AS channel, SUM(amount) AS "SUM(amount)" FROM public.orders JOIN (SELECT channel AS channel__, SUM(amount) AS mme_inner__ FROM public.orders GROUP BY channel ORDER BY mme_inner__ DESC LIMIT 2) AS anon_1 ON channel = channel__ GROUP BY DATE_TRUNC('month', created_at), channel ORDER BY __timestamp, channel LIMIT 10000;
-- superset: big number with trendline
SELECT DATE_TRUNC('week', created_at) AS __timestamp, COUNT(DISTINCT customer_id) AS "COUNT_DISTINCT(customer_id)" FROM public.orders GROUP BY DATE_TRUNC('week', created_at) ORDER BY __timestamp;
-- superset: pie chart
SELECT category AS category, COUNT(*) AS count FROM public.products GROUP BY category ORDER BY count DESC, category LIMIT 100;
-- superset: box plot source
SELECT channel AS channel, status AS status, MAX(amount) AS "MAX(amount)", MIN(amount) AS "MIN(amount)" FROM public.orders GROUP BY channel, status ORDER BY channel, status LIMIT 10000;
-- superset: filter box distinct
SELECT DISTINCT segment FROM public.customers ORDER BY segment LIMIT 1000;
-- superset: samples
SELECT * FROM public.orders ORDER BY id LIMIT 1000;
-- superset: samples virtual
SELECT * FROM (SELECT id, status, amount FROM public.orders WHERE quantity >= 3) AS virtual_table ORDER BY id LIMIT 1000;
-- superset: metadata probe
SELECT * FROM public.customers LIMIT 0;
-- superset: sql lab wrapped
SELECT * FROM (SELECT c.segment, count(*) AS n FROM public.customers c JOIN public.orders o ON o.customer_id = c.id GROUP BY c.segment) AS inner_qry ORDER BY segment LIMIT 1001;
-- superset: rolling mean
SELECT __timestamp, AVG("SUM(amount)") OVER (ORDER BY __timestamp ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS rolling FROM (SELECT DATE_TRUNC('month', created_at) AS __timestamp, SUM(amount) AS "SUM(amount)" FROM public.orders GROUP BY DATE_TRUNC('month', created_at)) AS t ORDER BY __timestamp;
-- superset: pivot
SELECT status AS status, channel AS channel, COUNT(*) AS count FROM public.orders GROUP BY status, channel ORDER BY status, channel LIMIT 10000;
-- superset: having
SELECT customer_id AS customer_id, SUM(amount) AS "SUM(amount)" FROM public.orders GROUP BY customer_id HAVING SUM(amount) > 1500 ORDER BY "SUM(amount)" DESC, customer_id LIMIT 100;
-- superset: adhoc sql metric
SELECT channel AS channel, SUM(CASE WHEN status = 'refunded' THEN amount ELSE 0 END) / NULLIF(SUM(amount), 0) AS refund_rate FROM public.orders GROUP BY channel ORDER BY channel;
-- superset: world map
SELECT c.country_code AS country_code, COUNT(*) AS count FROM public.customers AS c GROUP BY c.country_code ORDER BY count DESC, country_code;
-- superset: histogram
SELECT amount AS amount FROM public.orders WHERE amount IS NOT NULL ORDER BY amount LIMIT 10000;
-- superset: heatmap
SELECT EXTRACT(DOW FROM created_at) AS dow, EXTRACT(HOUR FROM created_at) AS hour, COUNT(*) AS count FROM public.orders GROUP BY 1, 2 ORDER BY 1, 2;
-- superset: time comparison
SELECT DATE_TRUNC('month', created_at) AS __timestamp, SUM(amount) AS total FROM public.orders WHERE created_at >= '2024-01-01' AND created_at < '2025-01-01' GROUP BY 1 ORDER BY 1;
-- superset: native filter time range
SELECT MIN(created_at) AS min_val, MAX(created_at) AS max_val FROM public.orders;
-- tableau: sheet by status
SELECT "orders"."status" AS "status", SUM("orders"."amount") AS "agg:status:ok" FROM "public"."orders" "orders" GROUP BY 1 ORDER BY 1;
-- tableau: sheet by channel
SELECT "orders"."channel" AS "channel", COUNT(DISTINCT "orders"."customer_id") AS "agg:channel:ok" FROM "public"."orders" "orders" GROUP BY 1 ORDER BY 1;
-- tableau: sheet by quantity
SELECT "orders"."quantity" AS "quantity", AVG(CAST("orders"."amount" AS DOUBLE PRECISION)) AS "agg:quantity:ok" FROM "public"."orders" "orders" GROUP BY 1 ORDER BY 1;
-- tableau: count records
SELECT COUNT(1) AS "cnt:orders_8A2:ok" FROM "public"."orders" "orders" HAVING (COUNT(1) > 0);
-- tableau: year quarter
SELECT CAST(EXTRACT(YEAR FROM "orders"."created_at") AS BIGINT) AS "yr:created_at:ok", CAST(EXTRACT(QUARTER FROM "orders"."created_at") AS BIGINT) AS "qr:created_at:ok", SUM("orders"."amount") AS "sum:amount:ok" FROM "public"."orders" "orders" GROUP BY 1, 2 ORDER BY 1, 2;
-- tableau: truncated month
SELECT DATE_TRUNC('MONTH', CAST("orders"."created_at" AS TIMESTAMP WITHOUT TIME ZONE)) AS "tmn:created_at:ok", SUM("orders"."quantity") AS "sum:quantity:ok" FROM "public"."orders" "orders" GROUP BY 1 ORDER BY 1;
-- tableau: join with custom sql
SELECT "Custom SQL Query"."segment" AS "segment", SUM("orders"."amount") AS "sum:amount:ok" FROM "public"."orders" "orders" INNER JOIN (SELECT id, segment FROM public.customers WHERE is_active) "Custom SQL Query" ON ("orders"."customer_id" = "Custom SQL Query"."id") GROUP BY 1 ORDER BY 1;
-- tableau: left join two tables
SELECT "products"."category" AS "category", "orders"."channel" AS "channel", SUM("orders"."amount") AS "sum:amount:ok" FROM "public"."orders" "orders" LEFT JOIN "public"."products" "products" ON ("orders"."product_id" = "products"."id") GROUP BY 1, 2 ORDER BY 1, 2;
-- tableau: filter in set
SELECT "orders"."status" AS "status", SUM("orders"."amount") AS "sum:amount:ok" FROM "public"."orders" "orders" WHERE ("orders"."channel" IN ('mobile', 'web')) GROUP BY 1 ORDER BY 1;
-- tableau: top n
SELECT "orders"."customer_id" AS "customer_id", SUM("orders"."amount") AS "sum:amount:ok" FROM "public"."orders" "orders" INNER JOIN (SELECT "orders"."customer_id" AS "customer_id", SUM("orders"."amount") AS "$__alias__0" FROM "public"."orders" "orders" GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 10) "t0" ON ("orders"."customer_id" IS NOT DISTINCT FROM "t0"."customer_id") GROUP BY 1 ORDER BY 2 DESC, 1;
-- tableau: calculated field
SELECT (CASE WHEN ("orders"."discount" > 0.2) THEN 'High' ELSE 'Low' END) AS "Calculation_1", COUNT(1) AS "cnt:orders:ok" FROM "public"."orders" "orders" GROUP BY 1 ORDER BY 1;
-- tableau: date part names
SELECT TO_CHAR("orders"."created_at", 'Month') AS "mn:created_at:nk", COUNT(1) AS "cnt:orders:ok" FROM "public"."orders" "orders" GROUP BY 1 ORDER BY 1;
-- tableau: min max for filter
SELECT MIN("orders"."amount") AS "TEMP(attr:amount:qk)(1)", MAX("orders"."amount") AS "TEMP(attr:amount:qk)(2)" FROM "public"."orders" "orders" HAVING (COUNT(1) > 0);
-- tableau: domain of a dimension
SELECT "customers"."country_code" AS "country_code" FROM "public"."customers" "customers" GROUP BY 1 ORDER BY 1;
-- tableau: lod fixed
SELECT "t0"."segment" AS "segment", AVG("t0"."__measure__0") AS "avg:Calculation:ok" FROM (SELECT "customers"."segment" AS "segment", "orders"."customer_id" AS "customer_id", SUM("orders"."amount") AS "__measure__0" FROM "public"."orders" "orders" INNER JOIN "public"."customers" "customers" ON ("orders"."customer_id" = "customers"."id") GROUP BY 1, 2) "t0" GROUP BY 1 ORDER BY 1;
-- tableau: datediff days
SELECT "orders"."status" AS "status", AVG(CAST(EXTRACT(EPOCH FROM ("orders"."shipped_at" - CAST("orders"."created_at" AS TIMESTAMP WITH TIME ZONE))) / 86400 AS DOUBLE PRECISION)) AS "avg:days:ok" FROM "public"."orders" "orders" WHERE "orders"."shipped_at" IS NOT NULL GROUP BY 1 ORDER BY 1;
-- tableau: string functions
SELECT UPPER(SUBSTRING("customers"."name" FROM 1 FOR 5)) AS "Calc", COUNT(1) AS "cnt" FROM "public"."customers" "customers" GROUP BY 1 ORDER BY 1;
-- tableau: boolean filter
SELECT COUNT(1) AS "cnt:customers:ok" FROM "public"."customers" "customers" WHERE "customers"."is_active" HAVING (COUNT(1) > 0);
-- tableau: null handling
SELECT COALESCE("customers"."email", 'unknown') AS "email_c", COUNT(1) AS "n" FROM "public"."customers" "customers" WHERE "customers"."email" IS NULL GROUP BY 1;
-- tableau: extract data
SELECT "orders"."id" AS "id", "orders"."amount" AS "amount", "orders"."created_at" AS "created_at", "orders"."shipped_at" AS "shipped_at" FROM "public"."orders" "orders" ORDER BY 1;
-- tableau: relative date filter
SELECT SUM("orders"."amount") AS "sum:amount:ok" FROM "public"."orders" "orders" WHERE (("orders"."created_at" >= TIMESTAMP '2024-07-01 00:00:00') AND ("orders"."created_at" < TIMESTAMP '2024-10-01 00:00:00')) HAVING (COUNT(1) > 0);
-- tableau: running total table calc source
SELECT DATE_TRUNC('WEEK', "orders"."created_at") AS "twk:created_at:ok", SUM("orders"."amount") AS "sum:amount:ok" FROM "public"."orders" "orders" GROUP BY 1 ORDER BY 1;
-- tableau: median
SELECT "orders"."channel" AS "channel", PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY "orders"."amount") AS "med:amount:ok" FROM "public"."orders" "orders" GROUP BY 1 ORDER BY 1;
-- tableau: cross join public
SELECT "countries"."region" AS "region", COUNT(1) AS "cnt" FROM "public"."customers" "customers" INNER JOIN "public"."countries" "countries" ON ("customers"."country_code" = "countries"."code") GROUP BY 1 ORDER BY 1;
-- tableau: stddev
SELECT "orders"."status" AS "status", STDDEV_SAMP(CAST("orders"."quantity" AS DOUBLE PRECISION)) AS "std:quantity:ok" FROM "public"."orders" "orders" GROUP BY 1 ORDER BY 1;
-- tableau: exists set
SELECT "customers"."segment" AS "segment", COUNT(1) AS "cnt" FROM "public"."customers" "customers" WHERE EXISTS (SELECT 1 FROM "public"."orders" "orders" WHERE ("orders"."customer_id" = "customers"."id") AND ("orders"."status" = 'refunded')) GROUP BY 1 ORDER BY 1;
-- powerbi: directquery by status
select "_"."status", "_"."a0" from (select "rows"."status" as "status", sum("rows"."amount") as "a0" from (select "_"."id", "_"."status", "_"."amount" from "public"."orders" "_") "rows" group by "status") "_" where not "_"."a0" is null limit 1000001;
-- powerbi: count rows by status
select "_"."status" as "c1", "_"."a0" as "a0" from (select "rows"."status" as "status", count(1) as "a0" from "public"."orders" "rows" group by "status") "_" order by "c1" limit 1000001;
-- powerbi: directquery by channel
select "_"."channel", "_"."a0" from (select "rows"."channel" as "channel", sum("rows"."amount") as "a0" from (select "_"."id", "_"."channel", "_"."amount" from "public"."orders" "_") "rows" group by "channel") "_" where not "_"."a0" is null limit 1000001;
-- powerbi: count rows by channel
select "_"."channel" as "c1", "_"."a0" as "a0" from (select "rows"."channel" as "channel", count(1) as "a0" from "public"."orders" "rows" group by "channel") "_" order by "c1" limit 1000001;
-- powerbi: distinct count
select count(distinct("_"."customer_id")) + max(case when "_"."customer_id" is null then 1 else 0 end) as "a0" from "public"."orders" "_";
-- powerbi: table visual
select "_"."id" as "c1", "_"."status" as "c2", "_"."amount" as "c3" from "public"."orders" "_" where "_"."quantity" = 3 order by "_"."id" limit 501;
-- powerbi: join model
select "$Outer"."category", sum("$Outer"."amount") as "a0" from (select "$Outer"."product_id", "$Outer"."amount", "$Inner"."category" from "public"."orders" "$Outer" left outer join "public"."products" "$Inner" on ("$Outer"."product_id" = "$Inner"."id")) "$Outer" group by "$Outer"."category" order by 1;
-- powerbi: slicer values
select "rows"."segment" as "segment" from (select "_"."segment" from "public"."customers" "_") "rows" group by "segment" order by "segment" limit 101;
-- powerbi: date hierarchy
select extract(year from "_"."created_at") as "c1", extract(month from "_"."created_at") as "c2", sum("_"."amount") as "a0" from "public"."orders" "_" group by 1, 2 order by 1, 2 limit 1000001;
-- powerbi: filter between
select sum("_"."amount") as "a0" from "public"."orders" "_" where ("_"."created_at" >= timestamp '2024-02-01 00:00:00' and "_"."created_at" < timestamp '2024-05-01 00:00:00');
-- powerbi: in filter
select "_"."channel", count(1) as "a0" from "public"."orders" "_" where "_"."status" in ('paid', 'shipped', 'pending') group by "_"."channel" order by "_"."channel";
-- powerbi: measure with nullif
select "_"."channel", sum("_"."amount") / nullif(count(1), 0) as "a0" from "public"."orders" "_" group by "_"."channel" order by 1;
-- powerbi: top n filter
select "_"."customer_id", "_"."a0" from (select "rows"."customer_id" as "customer_id", sum("rows"."amount") as "a0" from "public"."orders" "rows" group by "customer_id") "_" order by "_"."a0" desc, "_"."customer_id" limit 5;
-- powerbi: not null filter
select count(1) as "a0" from "public"."orders" "_" where not "_"."discount" is null;
-- powerbi: multiple measures
select "_"."status", sum("_"."amount") as "a0", sum("_"."quantity") as "a1", min("_"."created_at") as "a2", max("_"."created_at") as "a3" from "public"."orders" "_" group by "_"."status" order by 1;
-- powerbi: text filter starts with
select count(1) as "a0" from "public"."customers" "_" where "_"."name" like 'Customer 1%';
-- powerbi: case group
select case when "_"."quantity" >= 4 then 'bulk' else 'single' end as "c1", count(1) as "a0" from "public"."orders" "_" group by 1 order by 1;
-- powerbi: nested selects
select "_"."segment", "_"."a0" from (select "rows"."segment" as "segment", count(distinct("rows"."id")) as "a0" from (select "_"."id", "_"."segment" from "public"."customers" "_" where "_"."is_active" = true) "rows" group by "segment") "_" order by 1;
-- powerbi: relationship chain
select "c"."country_code", sum("o"."amount") as "a0" from "public"."orders" "o" inner join "public"."customers" "c" on ("o"."customer_id" = "c"."id") inner join "public"."countries" "k" on ("c"."country_code" = "k"."code") group by "c"."country_code" order by 1;
-- powerbi: date only
select cast("_"."created_at" as date) as "c1", count(1) as "a0" from "public"."orders" "_" where "_"."created_at" < timestamp '2024-01-20 00:00:00' group by 1 order by 1;
-- looker: explore by status
SELECT orders.status AS "orders.status", COUNT(*) AS "orders.count" FROM public.orders AS orders GROUP BY 1 ORDER BY 2 DESC, 1 FETCH NEXT 500 ROWS ONLY;
-- looker: explore by channel
SELECT orders.channel AS "orders.channel", COUNT(*) AS "orders.count" FROM public.orders AS orders GROUP BY 1 ORDER BY 2 DESC, 1 FETCH NEXT 500 ROWS ONLY;
-- looker: dimension group date
SELECT DATE(orders.created_at) AS "orders.created_date", COALESCE(SUM(orders.amount), 0) AS "orders.total_amount" FROM public.orders AS orders GROUP BY 1 ORDER BY 1 DESC FETCH NEXT 500 ROWS ONLY;
-- looker: dimension group month
SELECT TO_CHAR(DATE_TRUNC('month', orders.created_at), 'YYYY-MM') AS "orders.created_month", COALESCE(SUM(orders.amount), 0) AS "orders.total_amount" FROM public.orders AS orders GROUP BY 1 ORDER BY 1 DESC FETCH NEXT 500 ROWS ONLY;
-- looker: dimension group week
SELECT TO_CHAR(DATE_TRUNC('week', orders.created_at), 'YYYY-MM-DD') AS "orders.created_week", COALESCE(SUM(orders.amount), 0) AS "orders.total_amount" FROM public.orders AS orders GROUP BY 1 ORDER BY 1 DESC FETCH NEXT 500 ROWS ONLY;
-- looker: dimension group year
SELECT EXTRACT(YEAR FROM orders.created_at)::integer AS "orders.created_year", COALESCE(SUM(orders.amount), 0) AS "orders.total_amount" FROM public.orders AS orders GROUP BY 1 ORDER BY 1 DESC FETCH NEXT 500 ROWS ONLY;
-- looker: dimension group quarter
SELECT TO_CHAR(DATE_TRUNC('quarter', orders.created_at), 'YYYY-MM') AS "orders.created_quarter", COALESCE(SUM(orders.amount), 0) AS "orders.total_amount" FROM public.orders AS orders GROUP BY 1 ORDER BY 1 DESC FETCH NEXT 500 ROWS ONLY;
-- looker: join customers
SELECT customers.segment AS "customers.segment", COUNT(DISTINCT orders.id) AS "orders.count" FROM public.orders AS orders LEFT JOIN public.customers AS customers ON orders.customer_id = customers.id GROUP BY 1 ORDER BY 2 DESC, 1 FETCH NEXT 500 ROWS ONLY;
-- looker: derived table
WITH customer_facts AS (SELECT orders.customer_id AS customer_id, COUNT(*) AS lifetime_orders, SUM(orders.amount) AS lifetime_value FROM public.orders AS orders GROUP BY 1) SELECT customer_facts.lifetime_orders AS "customer_facts.lifetime_orders", COUNT(*) AS "customer_facts.count" FROM customer_facts GROUP BY 1 ORDER BY 1 FETCH NEXT 500 ROWS ONLY;
-- looker: derived table joined
WITH customer_facts AS (SELECT orders.customer_id AS customer_id, SUM(orders.amount) AS lifetime_value FROM public.orders AS orders GROUP BY 1) SELECT customers.segment AS "customers.segment", AVG(customer_facts.lifetime_value) AS "customer_facts.average_lifetime_value" FROM public.customers AS customers LEFT JOIN customer_facts ON customers.id = customer_facts.customer_id GROUP BY 1 ORDER BY 1 FETCH NEXT 500 ROWS ONLY;
-- looker: filtered measure
SELECT orders.channel AS "orders.channel", COUNT(CASE WHEN (orders.status = 'refunded') THEN 1 ELSE NULL END) AS "orders.refunded_count" FROM public.orders AS orders GROUP BY 1 ORDER BY 1 FETCH NEXT 500 ROWS ONLY;
-- looker: filter tier
SELECT CASE WHEN orders.amount < 100 THEN '0' WHEN orders.amount >= 100 AND orders.amount < 200 THEN '1' WHEN orders.amount >= 200 THEN '2' ELSE '3' END AS "orders.amount_tier__sort_", COUNT(*) AS "orders.count" FROM public.orders AS orders GROUP BY 1 ORDER BY 1 FETCH NEXT 500 ROWS ONLY;
-- looker: yesno dimension
SELECT CASE WHEN orders.shipped_at IS NOT NULL THEN 'Yes' ELSE 'No' END AS "orders.is_shipped", COUNT(*) AS "orders.count" FROM public.orders AS orders GROUP BY 1 ORDER BY 1;
-- looker: date filter
SELECT COUNT(*) AS "orders.count" FROM public.orders AS orders WHERE ((( orders.created_at ) >= ((TIMESTAMP '2024-04-01')) AND ( orders.created_at ) < ((TIMESTAMP '2024-04-01' + (30 || ' day')::INTERVAL))));
-- looker: totals
SELECT COUNT(*) AS "orders.count", COALESCE(SUM(orders.amount), 0) AS "orders.total_amount", AVG(orders.quantity) AS "orders.average_quantity" FROM public.orders AS orders;
-- looker: pivot
SELECT * FROM (SELECT *, DENSE_RANK() OVER (ORDER BY z___min_rank) as z___pivot_row_rank, RANK() OVER (PARTITION BY z__pivot_col_rank ORDER BY z___min_rank) as z__pivot_col_ordering, CASE WHEN z___min_rank = z___rank THEN 1 ELSE 0 END AS z__is_highest_ranked_cell FROM ( SELECT *, MIN(z___rank) OVER (PARTITION BY "orders.status") as z___min_rank FROM ( SELECT *, RANK() OVER (ORDER BY "orders.status" ASC, z__pivot_col_rank) AS z___rank FROM ( SELECT *, DENSE_RANK() OVER (ORDER BY "orders.channel" NULLS LAST) AS z__pivot_col_rank FROM ( SELECT orders.channel AS "orders.channel", orders.status AS "orders.status", COUNT(*) AS "orders.count" FROM public.orders AS orders GROUP BY 1, 2) ww ) bb WHERE z__pivot_col_rank <= 16384) aa) xx) zz WHERE (z__pivot_col_rank <= 50 OR z__is_highest_ranked_cell = 1) AND (z___pivot_row_rank <= 500 OR z__pivot_col_ordering = 1) ORDER BY z___pivot_row_rank;
-- looker: sql_always_where
SELECT products.category AS "products.category", COUNT(DISTINCT products.id) AS "products.count" FROM public.products AS products WHERE (products.price > 10) GROUP BY 1 ORDER BY 1 FETCH NEXT 500 ROWS ONLY;
-- looker: percent of total source
SELECT orders.status AS "orders.status", COALESCE(SUM(orders.amount), 0) AS "orders.total_amount", COALESCE(SUM(orders.amount), 0) * 1.0 / NULLIF(SUM(COALESCE(SUM(orders.amount), 0)) OVER (), 0) AS "share" FROM public.orders AS orders GROUP BY 1 ORDER BY 1;
-- looker: top customers
SELECT customers.name AS "customers.name", COALESCE(SUM(orders.amount), 0) AS "orders.total_amount" FROM public.orders AS orders INNER JOIN public.customers AS customers ON orders.customer_id = customers.id GROUP BY 1 ORDER BY 2 DESC, 1 FETCH NEXT 10 ROWS ONLY;
-- looker: country join public
SELECT countries.name AS "countries.name", COUNT(DISTINCT customers.id) AS "customers.count" FROM public.customers AS customers LEFT JOIN public.countries AS countries ON customers.country_code = countries.code GROUP BY 1 ORDER BY 1 FETCH NEXT 500 ROWS ONLY;
-- looker: subquery in filter
SELECT COUNT(*) AS "orders.count" FROM public.orders AS orders WHERE orders.customer_id IN (SELECT customers.id FROM public.customers AS customers WHERE customers.segment = 'Enterprise');
-- looker: row number
SELECT orders.id AS "orders.id", ROW_NUMBER() OVER (PARTITION BY orders.customer_id ORDER BY orders.created_at, orders.id) AS "orders.sequence" FROM public.orders AS orders ORDER BY 1 FETCH NEXT 500 ROWS ONLY;
-- looker: cohort
WITH first_orders AS (SELECT orders.customer_id, MIN(DATE_TRUNC('month', orders.created_at)) AS cohort FROM public.orders AS orders GROUP BY 1) SELECT TO_CHAR(first_orders.cohort, 'YYYY-MM') AS "cohort", COUNT(DISTINCT first_orders.customer_id) AS "customers" FROM first_orders GROUP BY 1 ORDER BY 1;
-- looker: lag
SELECT month, total, total - LAG(total) OVER (ORDER BY month) AS delta FROM (SELECT DATE_TRUNC('month', orders.created_at) AS month, SUM(orders.amount) AS total FROM public.orders AS orders GROUP BY 1) m ORDER BY 1;
-- analyst: grouping sets
SELECT status, channel, count(*) AS n, sum(amount) AS total FROM orders GROUP BY GROUPING SETS ((status), (channel), ()) ORDER BY status NULLS FIRST, channel NULLS FIRST;
-- analyst: rollup
SELECT status, channel, count(*) AS n FROM orders GROUP BY ROLLUP (status, channel) ORDER BY status NULLS LAST, channel NULLS LAST;
-- analyst: cube
SELECT status, quantity, sum(amount) AS total FROM orders GROUP BY CUBE (status, quantity) ORDER BY status NULLS LAST, quantity NULLS LAST;
-- analyst: grouping function
SELECT CASE WHEN grouping(status) = 1 THEN 'All' ELSE status END AS status, count(*) AS n FROM orders GROUP BY ROLLUP (status) ORDER BY 1;
-- analyst: correlated exists
SELECT c.id, c.name FROM customers c WHERE EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = c.id AND o.amount > 400) ORDER BY c.id;
-- analyst: correlated not exists
SELECT count(*) AS never_ordered FROM customers c WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = c.id);
-- analyst: correlated scalar
SELECT p.id, p.name, (SELECT count(*) FROM orders o WHERE o.product_id = p.id) AS orders FROM products p ORDER BY p.id;
-- analyst: correlated scalar max
SELECT c.id, (SELECT max(o.created_at) FROM orders o WHERE o.customer_id = c.id) AS last_order FROM customers c ORDER BY c.id LIMIT 40;
-- analyst: in subquery
SELECT count(*) FROM orders WHERE product_id IN (SELECT id FROM products WHERE category = 'Books');
-- analyst: not in subquery
SELECT count(*) FROM orders WHERE customer_id NOT IN (SELECT id FROM customers WHERE is_active);
-- analyst: window rank
SELECT id, customer_id, amount, rank() OVER (PARTITION BY customer_id ORDER BY amount DESC, id) AS r FROM orders ORDER BY customer_id, r LIMIT 100;
-- analyst: window ntile
SELECT ntile(4) OVER (ORDER BY amount, id) AS quartile, count(*) OVER () AS total, id FROM orders ORDER BY id;
-- analyst: moving average
SELECT id, amount, avg(amount) OVER (ORDER BY id ROWS BETWEEN 3 PRECEDING AND CURRENT ROW) AS ma FROM orders ORDER BY id;
-- analyst: first last value
SELECT DISTINCT customer_id, first_value(status) OVER w AS first_status, last_value(status) OVER w AS last_status FROM orders WINDOW w AS (PARTITION BY customer_id ORDER BY created_at, id ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) ORDER BY customer_id;
-- analyst: lead
SELECT id, created_at, lead(created_at) OVER (ORDER BY created_at, id) - created_at AS gap FROM orders ORDER BY id LIMIT 50;
-- analyst: percent rank
SELECT id, percent_rank() OVER (ORDER BY amount, id) AS pr, cume_dist() OVER (ORDER BY amount, id) AS cd FROM orders ORDER BY id;
-- analyst: count distinct multiple
SELECT count(DISTINCT customer_id) AS customers, count(DISTINCT product_id) AS products, count(DISTINCT (customer_id, product_id)) AS pairs FROM orders;
-- analyst: filter clause
SELECT channel, count(*) FILTER (WHERE status = 'paid') AS paid, count(*) FILTER (WHERE status = 'refunded') AS refunded FROM orders GROUP BY channel ORDER BY channel;
-- analyst: string agg
SELECT customer_id, string_agg(status, ',' ORDER BY id) AS statuses FROM orders WHERE customer_id < 6 GROUP BY customer_id ORDER BY customer_id;
-- analyst: array agg
SELECT category, array_agg(id ORDER BY id) AS ids FROM products GROUP BY category ORDER BY category;
-- analyst: cte chain
WITH paid AS (SELECT * FROM orders WHERE status = 'paid'), by_c AS (SELECT customer_id, sum(amount) AS total FROM paid GROUP BY customer_id) SELECT c.segment, avg(b.total) AS avg_total, max(b.total) AS max_total FROM by_c b JOIN customers c ON c.id = b.customer_id GROUP BY c.segment ORDER BY c.segment;
-- analyst: recursive cte
WITH RECURSIVE months(m) AS (SELECT DATE '2024-01-01' UNION ALL SELECT (m + INTERVAL '1 month')::date FROM months WHERE m < DATE '2024-12-01') SELECT months.m, count(o.id) AS n FROM months LEFT JOIN orders o ON date_trunc('month', o.created_at) = months.m GROUP BY months.m ORDER BY months.m;
-- analyst: union
SELECT 'customer' AS kind, count(*) AS n FROM customers UNION ALL SELECT 'product', count(*) FROM products UNION ALL SELECT 'order', count(*) FROM orders ORDER BY kind;
-- analyst: intersect
SELECT customer_id FROM orders WHERE status = 'paid' INTERSECT SELECT customer_id FROM orders WHERE status = 'refunded' ORDER BY 1;
-- analyst: except
SELECT id FROM products EXCEPT SELECT product_id FROM orders WHERE status = 'paid' ORDER BY 1;
-- analyst: self join
SELECT a.id, min(b.id) AS next_id FROM orders a JOIN orders b ON b.customer_id = a.customer_id AND b.id > a.id GROUP BY a.id ORDER BY a.id;
-- analyst: full outer join
SELECT coalesce(c.country_code, k.code) AS code, count(c.id) AS customers FROM customers c FULL OUTER JOIN countries k ON k.code = c.country_code GROUP BY 1 ORDER BY 1;
-- analyst: right join
SELECT k.code, count(c.id) AS customers FROM customers c RIGHT JOIN countries k ON k.code = c.country_code GROUP BY k.code ORDER BY k.code;
-- analyst: cross join
SELECT s.segment, p.category, count(*) AS n FROM (SELECT DISTINCT segment FROM customers) s CROSS JOIN (SELECT DISTINCT category FROM products) p GROUP BY 1, 2 ORDER BY 1, 2;
-- analyst: using join
SELECT count(*) FROM orders o JOIN (SELECT id AS customer_id, segment FROM customers) c USING (customer_id) WHERE c.segment = 'SMB';
-- analyst: distinct on
SELECT DISTINCT ON (customer_id) customer_id, id, amount FROM orders ORDER BY customer_id, amount DESC, id;
-- analyst: coalesce nullif
SELECT id, coalesce(discount, 0) AS d, nullif(status, 'pending') AS s FROM orders ORDER BY id LIMIT 60;
-- analyst: math
SELECT id, round(amount * 1.19, 2) AS gross, abs(amount - 250) AS dist, mod(id, 7) AS m, power(quantity, 2) AS sq, sqrt(quantity) AS rt FROM orders ORDER BY id LIMIT 80;
-- analyst: string ops
SELECT id, upper(name) AS u, length(name) AS l, split_part(email, '@', 2) AS domain, replace(name, 'Customer', 'C') AS short, left(name, 3) AS l3, concat(name, ' <', email, '>') AS display FROM customers ORDER BY id;
-- analyst: date arithmetic
SELECT id, signup_date + 30 AS trial_end, date_part('year', signup_date) AS y, signup_date - DATE '2023-01-01' AS days FROM customers ORDER BY id;
-- analyst: interval arithmetic
SELECT id, created_at + INTERVAL '2 hours' AS later, date_trunc('hour', created_at) AS h FROM orders ORDER BY id LIMIT 30;
-- analyst: timestamptz
SELECT id, shipped_at, shipped_at AT TIME ZONE 'UTC' AS shipped_utc FROM orders WHERE shipped_at IS NOT NULL ORDER BY id LIMIT 30;
-- analyst: to_char
SELECT to_char(created_at, 'YYYY-MM-DD HH24:MI') AS t, to_char(amount, 'FM999990.00') AS a FROM orders ORDER BY id LIMIT 25;
-- analyst: between dates
SELECT count(*) FROM orders WHERE created_at::date BETWEEN DATE '2024-03-01' AND DATE '2024-03-31';
-- analyst: like ilike
SELECT count(*) FILTER (WHERE name ILIKE 'customer 1%') AS a, count(*) FILTER (WHERE email LIKE '%5@%') AS b FROM customers;
-- analyst: case searched
SELECT CASE status WHEN 'paid' THEN 1 WHEN 'shipped' THEN 2 ELSE 0 END AS code, count(*) FROM orders GROUP BY 1 ORDER BY 1;
-- analyst: greatest least
SELECT id, greatest(amount, 100) AS g, least(quantity, 3) AS l FROM orders ORDER BY id LIMIT 40;
-- analyst: boolean aggregates
SELECT segment, bool_and(is_active) AS all_active, bool_or(is_active) AS any_active, count(*) FILTER (WHERE is_active) AS active FROM customers GROUP BY segment ORDER BY segment;
-- analyst: statistics
SELECT channel, stddev_pop(amount) AS sd, var_samp(amount) AS v, corr(quantity, amount) AS r FROM orders GROUP BY channel ORDER BY channel;
-- analyst: percentiles
SELECT percentile_disc(0.9) WITHIN GROUP (ORDER BY amount) AS p90, percentile_cont(0.25) WITHIN GROUP (ORDER BY quantity) AS p25 FROM orders;
-- analyst: values join
SELECT v.label, count(o.id) AS n FROM (VALUES ('paid', 'Paid'), ('shipped', 'Shipped')) AS v(status, label) LEFT JOIN orders o ON o.status = v.status GROUP BY v.label ORDER BY v.label;
-- analyst: derived with alias columns
SELECT x.s, x.n FROM (SELECT status, count(*) FROM orders GROUP BY status) AS x(s, n) ORDER BY x.s;
-- analyst: order by alias nulls
SELECT id, discount AS d FROM orders ORDER BY d DESC NULLS LAST, id LIMIT 20;
-- analyst: offset paging
SELECT id, amount FROM orders ORDER BY id LIMIT 20 OFFSET 40;
-- analyst: fetch first
SELECT id FROM customers ORDER BY id FETCH FIRST 10 ROWS ONLY;
-- analyst: having count
SELECT product_id, count(*) AS n FROM orders GROUP BY product_id HAVING count(*) >= 16 ORDER BY product_id;
-- analyst: nested aggregates
SELECT avg(n) AS avg_orders_per_customer, max(n) AS most FROM (SELECT customer_id, count(*) AS n FROM orders GROUP BY customer_id) t;
-- analyst: scalar subquery in select
SELECT (SELECT count(*) FROM orders) AS orders, (SELECT count(*) FROM customers) AS customers, (SELECT count(*) FROM countries) AS countries;
-- analyst: any all
SELECT count(*) FROM orders WHERE amount > ALL (SELECT price * 20 FROM products WHERE category = 'Tools') OR quantity = ANY (ARRAY[1, 2]);
-- analyst: tuple in
SELECT count(*) FROM orders WHERE (status, channel) IN (('paid', 'web'), ('shipped', 'mobile'));
-- analyst: is distinct from
SELECT count(*) FROM orders WHERE discount IS DISTINCT FROM 0.1;
-- analyst: json build
SELECT id, status FROM orders WHERE id IN (1, 2, 3) ORDER BY id;
-- analyst: exists in select
SELECT c.id, EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = c.id AND o.status = 'pending') AS has_pending FROM customers c ORDER BY c.id LIMIT 30;
-- analyst: lateral-free top per group
SELECT * FROM (SELECT o.*, row_number() OVER (PARTITION BY o.channel ORDER BY o.amount DESC, o.id) AS rn FROM orders o) t WHERE rn <= 3 ORDER BY channel, rn;
-- analyst: join three with filters
SELECT p.category, c.segment, sum(o.amount) AS total FROM orders o JOIN customers c ON c.id = o.customer_id JOIN products p ON p.id = o.product_id WHERE o.status <> 'refunded' AND c.is_active GROUP BY 1, 2 ORDER BY 1, 2;
-- analyst: point lookup
SELECT * FROM orders WHERE id = 42;
-- analyst: range lookup
SELECT id, amount FROM orders WHERE id BETWEEN 100 AND 110 ORDER BY id;
-- analyst: point lookup customers
SELECT name, email FROM customers WHERE id = 7;
-- analyst: qualified star join
SELECT o.*, p.name AS product FROM orders o JOIN products p ON p.id = o.product_id WHERE o.id < 5 ORDER BY o.id;
-- analyst: count star variants
SELECT count(*), count(1), count(discount), count(DISTINCT discount) FROM orders;
-- analyst: public only join
SELECT region, count(*) FROM countries GROUP BY region ORDER BY region;
-- analyst: extract epoch
SELECT id, extract(epoch FROM created_at) AS e FROM orders ORDER BY id LIMIT 10;
-- analyst: date_trunc with cte and window
WITH m AS (SELECT date_trunc('month', created_at) AS month, sum(amount) AS total FROM orders GROUP BY 1) SELECT month, total, sum(total) OVER (ORDER BY month) AS running FROM m ORDER BY month;
-- analyst: lateral last order
SELECT c.id, x.id AS last_order FROM customers c LEFT JOIN LATERAL (SELECT o.id FROM orders o WHERE o.customer_id = c.id ORDER BY o.created_at DESC, o.id DESC LIMIT 1) x ON true ORDER BY c.id;
-- analyst: lateral count
SELECT c.id, x.n FROM customers c CROSS JOIN LATERAL (SELECT count(*) AS n, sum(o.amount) AS total FROM orders o WHERE o.customer_id = c.id) x ORDER BY c.id;
-- analyst: lateral unnest of a column
SELECT p.category, t.word, count(*) AS n FROM products p CROSS JOIN LATERAL unnest(string_to_array(p.name, ' ')) AS t(word) GROUP BY 1, 2 ORDER BY 1, 2;
-- analyst: date spine
SELECT d::date AS day, count(o.id) AS n FROM generate_series(TIMESTAMP '2024-01-01', TIMESTAMP '2024-01-31', INTERVAL '1 day') AS d LEFT JOIN orders o ON o.created_at::date = d::date GROUP BY 1 ORDER BY 1;
-- analyst: array of a subquery
SELECT c.id, ARRAY(SELECT o.id FROM orders o WHERE o.customer_id = c.id ORDER BY o.id) AS ids FROM customers c ORDER BY c.id LIMIT 10;
-- analyst: set-returning function in the select list
SELECT id, unnest(ARRAY[quantity, quantity * 2]) AS v FROM orders WHERE id < 4 ORDER BY 1, 2;
-- analyst: generate_series over a protected bound
SELECT g AS bucket FROM generate_series(1, (SELECT max(quantity) FROM orders)) AS g ORDER BY 1;
-- analyst: full sample
SELECT count(*) AS n, sum(amount) AS total FROM orders TABLESAMPLE BERNOULLI (100);

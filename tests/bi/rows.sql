-- One tenant's rows for tests/bi/schema.sql: `{t}` the tenant, `{k}` a shift, `{n}` a size.
INSERT INTO customers
  SELECT '{t}', g, 'Customer ' || g,
         CASE WHEN (g + {k}) % 7 = 0 THEN NULL ELSE 'c' || g || '@example.com' END,
         (ARRAY['US','DE','FR','GB','JP'])[1 + (g + {k}) % 5],
         (ARRAY['SMB','Mid-Market','Enterprise'])[1 + (g * 2 + {k}) % 3],
         DATE '2023-01-01' + g * 5 + {k}, (g + {k}) % 4 <> 0
  FROM generate_series(1, 15 * {n}) g;
INSERT INTO products
  SELECT '{t}', g, 'Product ' || g, (ARRAY['Books','Games','Garden','Tools'])[1 + (g + {k}) % 4],
         ((g * 3 + {k}) * 1.25)::numeric(10,2), DATE '2022-06-01' + g * 17
  FROM generate_series(1, 6 * {n}) g;
INSERT INTO orders
  SELECT '{t}', g, 1 + (g * 7 + g / 9 + {k}) % (15 * {n}), 1 + (g * 11 + g / 7 + {k}) % (6 * {n}),
         (ARRAY['paid','shipped','refunded','pending'])[1 + (g + {k}) % 4], 1 + (g + {k}) % 5,
         (((g * 37 + {k}) % 500) + 0.99)::numeric(12,2),
         CASE WHEN g % 6 = 0 THEN NULL ELSE ((g + {k}) % 10) / 20.0 END,
         TIMESTAMP '2024-01-01 00:00:00' + (g * 557 + {k}) * INTERVAL '3 minutes',
         CASE WHEN (g + {k}) % 4 = 3 THEN NULL
              ELSE TIMESTAMPTZ '2024-01-03 12:00:00+00' + (g * 557 + {k}) * INTERVAL '3 minutes' END,
         (ARRAY['web','mobile','partner'])[1 + (g * 5 + {k}) % 3]
  FROM generate_series(1, 100 * {n}) g;

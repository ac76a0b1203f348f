#!/usr/bin/env python3
"""TPC-H through sluice against a tenant-only database (issue 25's figure).

Two tenants share one PostgreSQL database, every table protected by `tenant_id`, with
overlapping keys: tenant A at scale `--scale-a`, tenant B at `--scale-b`. A second database
holds only A's rows (same schema, same indexes). Each of the 22 queries of
`../shared/tpch/queries/` runs through sluice's wire door as tenant A and directly on the
tenant-only database; the script compares the answers (as sorted rows, numbers within a
relative 1e-9) and prints both times per query, the totals and the ratio, and writes
`EXPLAIN ANALYZE` of the worst query's rewritten SQL. A third time per query is the bound the
shared layout sets: the same query on the shared database as a role that PostgreSQL's own row
security filters to tenant A (`rls`; `--fence row_security` runs sluice itself that way: no
`OFFSET 0`, passthrough as the user's role under the same policy). The policy declares every
column's type (`--untyped`
declares none: no correlated or `IN` copies inside the wrappers).

Usage (from the repository root, after `cargo build --release -p sluice`):
  python3 -m venv ~/.cache/sluice-venvs/tpch
  ~/.cache/sluice-venvs/tpch/bin/pip install tpchgen-cli 'psycopg[binary]==3.2.13'
  ~/.cache/sluice-venvs/tpch/bin/python benches/tpch/run.py \
      --sluice $CARGO_TARGET_DIR/release/sluice --scale-a 0.01 --scale-b 0.02
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[2]
QUERIES = ROOT.parent / "shared" / "tpch" / "queries"
ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
SECRET = "tpch-bench-secret-0123456789abcdef"

TABLES = {
    "region": ("r_regionkey int, r_name text, r_comment text", "r_regionkey"),
    "nation": ("n_nationkey int, n_name text, n_regionkey int, n_comment text", "n_nationkey"),
    "supplier": (
        "s_suppkey int, s_name text, s_address text, s_nationkey int, s_phone text, "
        "s_acctbal numeric(15,2), s_comment text",
        "s_suppkey",
    ),
    "customer": (
        "c_custkey int, c_name text, c_address text, c_nationkey int, c_phone text, "
        "c_acctbal numeric(15,2), c_mktsegment text, c_comment text",
        "c_custkey",
    ),
    "part": (
        "p_partkey int, p_name text, p_mfgr text, p_brand text, p_type text, p_size int, "
        "p_container text, p_retailprice numeric(15,2), p_comment text",
        "p_partkey",
    ),
    "partsupp": (
        "ps_partkey int, ps_suppkey int, ps_availqty int, ps_supplycost numeric(15,2), "
        "ps_comment text",
        "ps_partkey, ps_suppkey",
    ),
    "orders": (
        "o_orderkey int, o_custkey int, o_orderstatus text, o_totalprice numeric(15,2), "
        "o_orderdate date, o_orderpriority text, o_clerk text, o_shippriority int, "
        "o_comment text",
        "o_orderkey",
    ),
    "lineitem": (
        "l_orderkey int, l_partkey int, l_suppkey int, l_linenumber int, "
        "l_quantity numeric(15,2), l_extendedprice numeric(15,2), l_discount numeric(15,2), "
        "l_tax numeric(15,2), l_returnflag text, l_linestatus text, l_shipdate date, "
        "l_commitdate date, l_receiptdate date, l_shipinstruct text, l_shipmode text, "
        "l_comment text",
        "l_orderkey, l_linenumber",
    ),
}


def columns(table):
    return [c.split()[0] for c in TABLES[table][0].split(", ")]


def generate(scale, out, tpchgen):
    subprocess.run([tpchgen, "csv", "-s", str(scale), f"--output-dir={out}"], check=True,
                   stdout=subprocess.DEVNULL)


def create_db(name, loads):
    """A fresh database `name` with the schema, loaded with (tenant, csv dir) pairs."""
    with psycopg.connect(ADMIN, autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        c.execute(f"CREATE DATABASE {name}")
    with psycopg.connect(f"host=127.0.0.1 port=5432 user=postgres dbname={name}",
                         autocommit=True) as c:
        for t, (cols, key) in TABLES.items():
            c.execute(f"CREATE TABLE {t} (tenant_id text NOT NULL, {cols}, "
                      f"PRIMARY KEY (tenant_id, {key}))")
        for tenant, d in loads:
            for t in TABLES:
                c.execute(f"ALTER TABLE {t} ALTER tenant_id SET DEFAULT '{tenant}'")
                cols = ", ".join(columns(t))
                with c.cursor().copy(
                        f"COPY {t} ({cols}) FROM STDIN WITH (FORMAT csv, HEADER true)") as cp:
                    with open(Path(d) / f"{t}.csv", "rb") as f:
                        while chunk := f.read(1 << 20):
                            cp.write(chunk)
        c.execute("""DO $$ BEGIN
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sluice_reader') THEN
              CREATE ROLE sluice_reader LOGIN NOSUPERUSER NOBYPASSRLS;
            END IF; END $$""")
        c.execute("GRANT USAGE ON SCHEMA public TO sluice_reader")
        c.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO sluice_reader")
        if len(loads) > 1:
            # The reference for what the shared layout allows: PostgreSQL's own row security
            # for a role `tpch_rls` filtered on `sluice.tenant` (sluice's reader sees every row).
            # `"A.bench"` is the role a passthrough connection acts as for the bench's user
            # (`--fence row_security`), under the same policy.
            c.execute("""DO $$ BEGIN
                IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tpch_rls') THEN
                  CREATE ROLE tpch_rls LOGIN NOSUPERUSER NOBYPASSRLS;
                END IF;
                IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'A.bench') THEN
                  CREATE ROLE "A.bench" NOLOGIN NOSUPERUSER NOBYPASSRLS;
                END IF; END $$""")
            c.execute('GRANT "A.bench" TO sluice_reader')
            c.execute('GRANT USAGE ON SCHEMA public TO tpch_rls, "A.bench"')
            c.execute('GRANT SELECT ON ALL TABLES IN SCHEMA public TO tpch_rls, "A.bench"')
            for t in TABLES:
                c.execute(f"ALTER TABLE {t} ENABLE ROW LEVEL SECURITY")
                c.execute(f'CREATE POLICY tenant ON {t} TO tpch_rls, "A.bench" '
                          "USING (tenant_id = current_setting('sluice.tenant', true))")
                c.execute(f"CREATE POLICY reader ON {t} TO sluice_reader USING (true)")
        c.execute("VACUUM ANALYZE")


def jwt():
    def b64(b):
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = b64(json.dumps({"sub": "bench", "tenant": "A", "iss": "tpch", "aud": "sluice",
                             "exp": int(time.time()) + 7200}).encode())
    sig = hmac.new(SECRET.encode(), f"{header}.{claims}".encode(), hashlib.sha256).digest()
    return f"{header}.{claims}.{b64(sig)}"


def types(table):
    """The policy's `types` table for `table`: each column's PostgreSQL type."""
    pairs = [("tenant_id", "text")] + [
        (c.split()[0], c.split(None, 1)[1]) for c in TABLES[table][0].split(", ")]
    return "{ " + ", ".join(f'{c} = "{t}"' for c, t in pairs) + " }"


def config(path, typed=True, fence="offset"):
    tables = "".join(
        f'\n[[connections.tables]]\nname = "public.{t}"\naccess = "protected"\n'
        f'tenant_column = "tenant_id"\ncolumns = {json.dumps(["tenant_id"] + columns(t))}\n'
        + (f"types = {types(t)}\n" if typed else "")
        for t in TABLES)
    path.write_text(f"""
[server]
request_timeout_ms = 600000

[auth.jwt]
algorithm = "HS256"
secret_env = "TPCH_SECRET"
issuer = "tpch"
audience = "sluice"

[limits]
max_result_rows = 1000000
query_timeout_ms = 600000

[pgwire]
listen = "127.0.0.1:0"

[[connections]]
id = "tpch"
kind = "postgres"
url_env = "TPCH_PG_URL"
statement_timeout_ms = 600000
{'credential = "passthrough"' if fence == "row_security" else ""}
tenant_fence = "{fence}"
{tables}""")


def rows(cur, sql):
    t0 = time.perf_counter()
    cur.execute(sql)
    out = cur.fetchall()
    return time.perf_counter() - t0, out


def norm(v):
    if v is None:
        return (0, "")
    try:
        return (1, float(v))
    except (TypeError, ValueError):
        return (2, str(v))


def same(a, b):
    if len(a) != len(b):
        return False
    for ra, rb in zip(sorted(map(lambda r: tuple(map(norm, r)), a)),
                      sorted(map(lambda r: tuple(map(norm, r)), b))):
        for x, y in zip(ra, rb):
            if x[0] == 1 and y[0] == 1:
                if abs(x[1] - y[1]) > 1e-9 * max(abs(x[1]), abs(y[1])):
                    return False
            elif x != y:
                return False
    return True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sluice", required=True)
    ap.add_argument("--scale-a", type=float, default=0.01)
    ap.add_argument("--scale-b", type=float, default=0.02)
    ap.add_argument("--only", default="", help="comma-separated query numbers")
    ap.add_argument("--explain-dir", default="")
    ap.add_argument("--pg-options", default="",
                    help="libpq `options` for every connection, e.g. '-c jit=off'")
    ap.add_argument("--fence", default="offset", choices=["offset", "row_security"],
                    help="the connection's tenant_fence (row_security: passthrough as role "
                         "\"A.bench\" under the database's policies)")
    ap.add_argument("--untyped", action="store_true",
                    help="declare no column types (no correlated or IN copies)")
    args = ap.parse_args()
    tpchgen = shutil.which("tpchgen-cli") or str(Path(sys.executable).parent / "tpchgen-cli")
    work = Path(tempfile.mkdtemp(prefix="sluice-tpch-"))
    generate(args.scale_a, work / "a", tpchgen)
    generate(args.scale_b, work / "b", tpchgen)
    create_db("sluice_tpch_shared", [("A", work / "a"), ("B", work / "b")])
    create_db("sluice_tpch_a", [("A", work / "a")])
    config(work / "tpch.toml", typed=not args.untyped, fence=args.fence)
    env = dict(os.environ, TPCH_SECRET=SECRET,
               TPCH_PG_URL="postgres://sluice_reader@127.0.0.1:5432/sluice_tpch_shared"
               + (f"?options={urllib.parse.quote(args.pg_options)}" if args.pg_options else ""),
               RUST_LOG="warn")
    daemon = subprocess.Popen(
        [args.sluice, "serve", "--config", str(work / "tpch.toml"), "--data-dir",
         str(work / "data"), "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    wire = http = None
    for line in daemon.stdout:
        if m := re.search(r"sluice listening on (\S+)", line):
            http = m.group(1)
        if m := re.search(r"sluice PostgreSQL wire protocol on (\S+)", line):
            wire = m.group(1)
            break
    if wire is None or http is None:
        sys.exit("the daemon did not start")
    try:
        measure(args, wire, http)
    finally:
        daemon.terminate()
        daemon.wait()


def measure(args, wire, http):
    host, port = wire.rsplit(":", 1)
    through = psycopg.connect(host=host, port=port, user="bench", password=jwt(),
                              dbname="tpch", autocommit=True)
    direct = psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=sluice_tpch_a",
                             autocommit=True, options=args.pg_options)
    rls = psycopg.connect("host=127.0.0.1 port=5432 user=tpch_rls dbname=sluice_tpch_shared",
                          autocommit=True, options=args.pg_options)
    rls.execute("SET sluice.tenant = 'A'")
    only = {int(x) for x in args.only.split(",") if x}
    results = []
    for n in range(1, 23):
        if only and n not in only:
            continue
        sql = (QUERIES / f"q{n:02d}.sql").read_text().strip().rstrip(";")
        td, want = rows(direct.cursor(), sql)
        tr, by_rls = rows(rls.cursor(), sql)
        if not same(by_rls, want):
            print(f"q{n:02d}: row security answers differently", file=sys.stderr)
        try:
            ts, got = rows(through.cursor(), sql)
            ok = same(got, want)
        except psycopg.Error as e:
            ts, got, ok = float("inf"), [], False
            print(f"q{n:02d}: through sluice: {e}", file=sys.stderr)
        results.append((n, td, ts, ok, len(want), tr))
        print(f"q{n:02d}  direct {td * 1000:9.1f} ms  rls {tr * 1000:9.1f} ms  "
              f"sluice {ts * 1000:9.1f} ms  "
              f"x{ts / td if td else float('nan'):7.2f}  rows {len(want):5d}  "
              f"{'identical' if ok else 'DIFFERENT'}", flush=True)
    total_d = sum(r[1] for r in results)
    total_s = sum(r[2] for r in results)
    total_r = sum(r[5] for r in results)
    print(f"total  direct {total_d:.2f} s  rls {total_r:.2f} s (x{total_r / total_d:.2f})  "
          f"sluice {total_s:.2f} s  x{total_s / total_d:.2f}  "
          f"identical {sum(r[3] for r in results)}/{len(results)}  "
          f"empty answers {[r[0] for r in results if r[4] == 0]}")
    worst = max(results, key=lambda r: r[2] / r[1] if r[1] else 0)
    print(f"worst q{worst[0]:02d}: x{worst[2] / worst[1]:.1f}")
    if args.explain_dir:
        out = Path(args.explain_dir)
        out.mkdir(parents=True, exist_ok=True)
        sql = (QUERIES / f"q{worst[0]:02d}.sql").read_text().strip().rstrip(";")
        # The rewritten SQL, from the policy's explain (the query path's policy), planned on
        # the shared database with the tenant bound as sluice binds it.
        req = urllib.request.Request(
            f"{http}/v1/policy/explain", data=json.dumps({"sql": sql}).encode(),
            headers={"Authorization": f"Bearer {jwt()}", "Content-Type": "application/json"})
        explained = json.load(urllib.request.urlopen(req))
        (out / f"q{worst[0]:02d}.rewritten.sql").write_text(explained["sql"] + "\n")
        # Planned as sluice's query runs: as a role under the row-security policy when the
        # connection relies on it (the superuser would bypass it).
        user = "tpch_rls" if args.fence == "row_security" else "postgres"
        with psycopg.connect(f"host=127.0.0.1 port=5432 user={user} "
                             "dbname=sluice_tpch_shared", autocommit=True,
                             options=args.pg_options) as shared:
            shared.execute("SET sluice.tenant = 'A'")
            # psycopg binds `%s`: the tenant is sluice's only parameter, `$1`.
            text = explained["sql"].replace("%", "%%").replace("$1", "%s")
            params = explained["params"] * explained["sql"].count("$1")
            plan = shared.execute(f"EXPLAIN ANALYZE {text}", params).fetchall()
        (out / f"q{worst[0]:02d}.sluice.txt").write_text("\n".join(r[0] for r in plan) + "\n")
        plan = direct.execute(f"EXPLAIN ANALYZE {sql}").fetchall()
        (out / f"q{worst[0]:02d}.direct.txt").write_text("\n".join(r[0] for r in plan) + "\n")


if __name__ == "__main__":
    main()

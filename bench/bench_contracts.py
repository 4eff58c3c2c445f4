"""How long a contract with many routes takes to judge, against reading its YAML alone.

Run ``python bench/bench_contracts.py``. Each contract is the bundled ACME contract with its
routes replaced by N distinct ones (`/v1/rI/{id}`), about 162 bytes of YAML a route, so 6,000
routes come near the 1 MiB a contract file may hold. For each N it times, in this process and
one after the other, reading the file as strict YAML (the baseline) and loading the contract set
(reading plus every check), and prints both and their ratio: the checks' own cost is what the
ratio adds over 1.0. A check that compares every route with every other one shows as a ratio
that grows with N.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from gateway.contractset import load_contract_set
from gateway.settings import Settings
from gateway.yamlfile import read_yaml_file

BUNDLED = Path(__file__).resolve().parent.parent / "contracts" / "acme-credit.yaml"


def contract_with_routes(routes: int) -> str:
    head = BUNDLED.read_text(encoding="utf-8").split("\nroutes:\n", 1)[0]
    lines = [
        f'  - {{method: POST, path: "/v1/r{i}/{{id}}", purpose: credit_assessment, '
        "subject: applicant.user_id, "
        "fields: [{path: loan_amount, category: business.transaction}]}\n"
        for i in range(routes)
    ]
    return f"{head}\nroutes:\n{''.join(lines)}"


def best_of(repeats: int, run: Callable[[], object]) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--routes", type=int, nargs="+", default=[500, 2000, 6000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    settings = Settings()
    ratios = []
    print(f"{'routes':>7} {'bytes':>9} {'YAML only':>10} {'load + checks':>14} {'ratio':>6}")
    with tempfile.TemporaryDirectory(prefix="bench-contracts-") as tmp:
        for routes in args.routes:
            folder = Path(tmp) / str(routes)
            folder.mkdir()
            path = folder / "acme-credit.yaml"
            path.write_text(contract_with_routes(routes), encoding="utf-8")
            loaded, problems = load_contract_set(folder, settings)
            if loaded is None:  # the benchmark measures a valid contract, all checks run
                raise SystemExit(f"the generated contract is refused: {problems[0]}")
            parsing = best_of(args.repeats, partial(read_yaml_file, path))
            loading = best_of(args.repeats, partial(load_contract_set, folder, settings))
            ratios.append(loading / parsing)
            print(
                f"{routes:>7,} {path.stat().st_size:>9,} {parsing:>9.2f}s {loading:>13.2f}s "
                f"{loading / parsing:>5.2f}×"
            )
    print(f"median ratio, load with every check / YAML only: {statistics.median(ratios):.2f}×")


if __name__ == "__main__":
    main()

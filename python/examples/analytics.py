"""A department analyst's script: query under a grant, aggregate, show a table (and a chart
when matplotlib is installed).

    python python/examples/analytics.py                       # builds a small demo store
    python python/examples/analytics.py STORE USER PURPOSE    # your store and grant

Adapt the SQL below to your grant: `session.catalog()` lists the fields you may use. Every
query you run is on the platform's audit trail with your name and purpose.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import govshare


def demo_store(root: Path) -> tuple[str, str, str]:
    """A store with 5 000 synthetic persons and a statistics grant for user 'analyst'."""
    store = root / "store"
    # The store's first platform administrator is named when it is created; every later act
    # is done by a user with the role for it.
    govshare.init_store(store, admin="admin", admin_name="平台管理员", region="430000")
    person_csv, _ = govshare.write_synthetic(root / "data", persons=5000, entities=0)
    engine = govshare.Engine(store)
    engine.add_user("ops", "运维员", "PLAT", ["operator"], by="admin")
    engine.load("person", person_csv, by="ops")
    engine.add_department("STAT", "省统计局", "430000", by="admin")
    engine.add_user("analyst", "统计分析员", "STAT", ["consumer"], by="admin")
    # Unconditional fields are granted on request by the platform admin.
    request = govshare.grant_request(
        "STAT", "person", ["sex_code", "hukou_region_code", "education_code", "person_status"],
        "STATS", "人口结构统计",
    )
    engine.request_grant(request, by="admin")
    return str(store), "analyst", "STATS"


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        store, user, purpose = argv[1:4] if len(argv) == 4 else demo_store(Path(tmp))
        with govshare.connect(store, user=user, purpose=purpose) as session:
            print("fields you may use:", [f["name"] for f in session.catalog()[0]["fields"]])
            table = session.sql(
                """
                SELECT substr(hukou_region_code, 1, 2) AS province,
                       sum(CASE WHEN sex_code = '1' THEN 1 ELSE 0 END) AS male,
                       sum(CASE WHEN sex_code = '2' THEN 1 ELSE 0 END) AS female,
                       count(*) AS total
                FROM person
                WHERE person_status = '正常'
                GROUP BY province
                ORDER BY total DESC
                LIMIT 10
                """
            ).to_arrow()
        try:
            frame = table.to_pandas()
        except ImportError:  # pandas is optional: print the Arrow table instead
            print(table)
            return 0
        frame["female_share"] = (frame["female"] / frame["total"]).round(3)
        print(frame.to_string(index=False))
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return 0
        ax = frame.plot.bar(x="province", y=["male", "female"], stacked=True)
        ax.set_ylabel("persons (status: normal)")
        out = Path("population_by_province.png")
        plt.savefig(out, bbox_inches="tight")
        print(f"chart written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

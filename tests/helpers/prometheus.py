"""A real Prometheus for the tests, on a free loopback port, scraping what a test names every
second (the monitoring tests, the autopilot's signals)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import yaml

from gelombang_harness import ChildProcess, HttpReady
from queue_service.redis_server import free_port
from tests.helpers.tools import require_tool


class PrometheusProcess(ChildProcess):
    """`targets`: (job name, "host:port") pairs scraped every second; `rule_files`: globs."""

    def __init__(
        self,
        work_dir: Path,
        targets: Sequence[tuple[str, str]] = (),
        *,
        rule_files: Sequence[Path] = (),
        scrape_interval_s: float = 1.0,
    ) -> None:
        executable = require_tool("prometheus", package="prometheus")
        work_dir.mkdir(parents=True, exist_ok=True)
        interval = f"{scrape_interval_s:g}s"
        jobs: dict[str, list[str]] = {}
        for job, target in targets:
            jobs.setdefault(job, []).append(target)
        config = {
            "global": {
                "scrape_interval": interval,
                "scrape_timeout": interval,
                "evaluation_interval": interval,
            },
            "rule_files": [str(path) for path in rule_files],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": hosts}]}
                for job, hosts in jobs.items()
            ],
        }
        config_path = work_dir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(
            "prometheus",
            [
                executable,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={work_dir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            log=work_dir / "prometheus.log",
            ready=HttpReady(f"{self.url}/-/ready"),
        )

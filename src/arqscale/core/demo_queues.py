"""The built-in demo queues, used when no ``ARQSCALE_QUEUES_FILE`` is given (their tasks: ``arqscale.demo.tasks``)."""

from __future__ import annotations

from typing import Any

DEMO_QUEUES: dict[str, Any] = {
    "queues": {
        "email": {
            "functions": ["arqscale.demo.tasks.send_email"],
            "concurrency": 20,
            "job_timeout": 30,
            "max_tries": 5,
            "backoff": {"strategy": "exponential", "delay": 1, "max_delay": 30},
            # Mail providers throttle: 50 sends a second across every email worker.
            "rate_limit": {"max_jobs": 50, "interval": 1},
            "autoscaling": {"min_replicas": 1, "max_replicas": 10, "metrics": ["backlog"], "target_per_replica": 50},
        },
        "exports": {
            "functions": ["arqscale.demo.tasks.export_csv"],
            "concurrency": 4,
            "job_timeout": 120,
            "max_tries": 3,
            "autoscaling": {"min_replicas": 1, "max_replicas": 5, "metrics": ["backlog"], "target_per_replica": 4},
        },
        "image_processing": {
            "functions": ["arqscale.demo.tasks.resize_image"],
            "concurrency": 8,
            "job_timeout": 60,
            "max_tries": 3,
            "autoscaling": {
                "min_replicas": 1,
                "max_replicas": 8,
                "metrics": ["backlog", "oldest_waiting"],
                "target_per_replica": 16,
                "target_oldest_waiting_seconds": 20,
            },
        },
        "verification": {
            "functions": ["arqscale.demo.tasks.verify_document"],
            "concurrency": 10,
            "job_timeout": 30,
            "max_tries": 3,
            "backoff": {"strategy": "exponential", "delay": 0.5, "max_delay": 10},
            "autoscaling": {"min_replicas": 1, "max_replicas": 6, "metrics": ["waiting"], "target_per_replica": 10},
        },
    }
}

"""The benchmark's event: about 200 bytes of persistent JSON, the same everywhere."""
import json


def event_data():
    return {"enrollment_id": 123456, "user_id": 654321, "course_id": 789,
            "course_title": "Python 101"}


def event_body():
    """~200 bytes: an envelope like the kit's around event_data()."""
    body = {"event_id": "0b7c6c1e9d4f4a4c9a7a6f7d2f0e9c11", "event_type": "bench.event",
            "source": "bench", "data": event_data()}
    raw = json.dumps(body, separators=(",", ":")).encode()
    return raw + b" " * max(0, 200 - len(raw))

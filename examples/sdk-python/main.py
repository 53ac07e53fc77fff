"""The whole wagate login flow through the generated Python client, against a sandbox gateway.

Links one device by QR code and one by pairing code, follows both through the API and through
signed webhooks (verified with the official `standardwebhooks` package), reads the delivery log,
then logs out and cleans up. Prints one line per step and `sdk example: ok` at the end; exits
non-zero with the reason on the first failure. Every wait is bounded.

Environment: WAGATE_URL (e.g. http://127.0.0.1:3000), WAGATE_USER, WAGATE_PASSWORD.
"""

from __future__ import annotations

import base64
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from standardwebhooks import Webhook, WebhookVerificationError

# The client is generated, never installed: see openapi/sdks/generate.sh.
GENERATED = Path(__file__).resolve().parents[2] / "openapi" / "sdks" / "generated" / "python"
sys.path.insert(0, str(GENERATED))

from wagate_client import AuthenticatedClient  # noqa: E402
from wagate_client.api.devices import (  # noqa: E402
    create_device,
    delete_device,
    get_device,
    get_device_status,
    list_devices,
    logout_device,
)
from wagate_client.api.login import login_device, login_device_with_code  # noqa: E402
from wagate_client.api.webhooks import (  # noqa: E402
    create_webhook,
    delete_webhook,
    list_webhook_deliveries,
)
from wagate_client.models import (  # noqa: E402
    CreateDeviceRequest,
    CreateWebhookRequest,
    DeviceStateName,
    LoggedInEvent,
    WebhookEventType,
)

# Bound on every wait: a sandbox login takes a second or two, so a minute means it is stuck.
WAIT_SECONDS = 60.0
PHONE = "628912344551"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EVENTS = ["logged_in", "qr_refreshed", "state_changed", "pair_code_issued", "logged_out"]

T = TypeVar("T")


class Failure(Exception):
    """A step did not go as it should; the message says which and why."""


def step(message: str) -> None:
    print(message, flush=True)


def wait_until(what: str, check: Callable[[], T | None], interval: float = 0.2) -> T:
    """Calls `check` until it returns something other than None, for at most WAIT_SECONDS."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        found = check()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise Failure(f"timed out after {WAIT_SECONDS:.0f} s waiting for {what}")
        time.sleep(interval)


def results(what: str, response: Any) -> Any:
    """The `results` of a successful answer; anything else is a Failure naming the call."""
    if response.status_code != HTTPStatus.OK:
        body = response.content.decode(errors="replace")
        raise Failure(f"{what}: HTTP {int(response.status_code)}: {body}")
    if response.parsed is None:
        # The generator leaves out answers it could not model; generate.sh would have warned.
        raise Failure(f"{what}: the generated client has no model for the answer")
    return response.parsed.results


class Receiver:
    """A webhook endpoint on 127.0.0.1 that keeps every event whose signature verifies."""

    def __init__(self) -> None:
        self._verifier: Webhook | None = None
        self._ready = threading.Event()
        self._changed = threading.Condition()
        self.events: list[dict[str, Any]] = []
        self.rejected: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                status = receiver._accept(body, dict(self.headers.items()))
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the example prints its own steps

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/webhook"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def use_secret(self, secret: str) -> None:
        self._verifier = Webhook(secret)
        self._ready.set()

    def _accept(self, body: bytes, headers: dict[str, str]) -> int:
        # The secret comes with the create-webhook answer; nothing is sent before it exists,
        # but a delivery racing that answer waits for it rather than failing.
        if not self._ready.wait(WAIT_SECONDS) or self._verifier is None:
            return HTTPStatus.SERVICE_UNAVAILABLE
        try:
            event = self._verifier.verify(body, headers)
        except WebhookVerificationError as error:
            with self._changed:
                self.rejected.append(f"{headers.get('webhook-id')}: {error}")
                self._changed.notify_all()
            return HTTPStatus.BAD_REQUEST
        with self._changed:
            # At-least-once delivery: a retry carries the same webhook-id and is kept once.
            if all(e["id"] != event["id"] for e in self.events):
                self.events.append(event)
            self._changed.notify_all()
        return HTTPStatus.NO_CONTENT

    def wait_for(self, event_type: str, device_id: str) -> dict[str, Any]:
        """The first verified `event_type` event of `device_id`, waiting at most WAIT_SECONDS."""
        deadline = time.monotonic() + WAIT_SECONDS
        with self._changed:
            while True:
                if self.rejected:
                    raise Failure(f"a webhook failed verification: {self.rejected[0]}")
                for event in self.events:
                    if event["type"] == event_type and event.get("device_id") == device_id:
                        return event
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [(e["type"], e.get("device_id")) for e in self.events]
                    raise Failure(
                        f"no verified `{event_type}` webhook for {device_id} within "
                        f"{WAIT_SECONDS:.0f} s; received {seen}"
                    )
                self._changed.wait(left)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def wait_logged_in(api: AuthenticatedClient, receiver: Receiver, device_id: str) -> None:
    """Waits for the login both ways a consumer can see it: the API and the signed webhook."""

    def logged_in() -> bool | None:
        status = results("getDeviceStatus", get_device_status.sync_detailed(device_id, client=api))
        return True if status.is_logged_in else None

    wait_until(f"{device_id} to report is_logged_in", logged_in)
    info = results("getDevice", get_device.sync_detailed(device_id, client=api))
    if info.state != DeviceStateName.LOGGED_IN:
        raise Failure(f"{device_id} is logged in but its state is {info.state}")
    step(f"{device_id}: status is_logged_in, state {info.state}, jid {info.jid}")

    # The webhook body is the spec's WebhookEvent; the generated model reads it.
    event = LoggedInEvent.from_dict(receiver.wait_for("logged_in", device_id))
    step(f"{device_id}: verified logged_in webhook, seq {event.seq}, jid {event.data.jid}")


def sandbox_phone(api: AuthenticatedClient, device_id: str, action: str) -> dict[str, Any]:
    """The sandbox's phone endpoints are not in the spec: call them with the client's own
    httpx client, which already carries the base URL and the Basic credentials."""
    path = f"/sandbox/devices/{quote(device_id, safe='')}/{action}"
    response = api.get_httpx_client().post(path)
    if response.status_code != HTTPStatus.OK:
        raise Failure(f"POST {path}: HTTP {response.status_code}: {response.text}")
    return response.json()["results"]


def delivered_logins(api: AuthenticatedClient, webhook_id: uuid.UUID) -> set[str]:
    page = results(
        "listWebhookDeliveries",
        list_webhook_deliveries.sync_detailed(webhook_id, client=api, limit=100),
    )
    return {
        str(d.event.device_id)
        for d in page.deliveries
        if d.event_type == "logged_in" and str(d.status) == "delivered"
    }


def run(api: AuthenticatedClient, receiver: Receiver) -> None:
    step(f"receiver: listening on {receiver.url}")

    created = results(
        "createWebhook",
        create_webhook.sync_detailed(
            client=api,
            body=CreateWebhookRequest(
                url=receiver.url,
                events=[WebhookEventType(name) for name in EVENTS],
                description="sdk-python example",
            ),
        ),
    )
    receiver.use_secret(created.secret)
    webhook_id = created.id
    step(f"webhook: created {webhook_id} for {', '.join(EVENTS)}")

    # Unique ids, so the example can run again against the same gateway.
    suffix = uuid.uuid4().hex[:8]
    qr_device = f"sdk-python-qr-{suffix}"
    code_device = f"sdk-python-code-{suffix}"

    device = results(
        "createDevice",
        create_device.sync_detailed(
            client=api, body=CreateDeviceRequest(device_id=qr_device, display_name="QR login")
        ),
    )
    step(f"{device.id}: created, state {device.state}")

    qr = results("loginDevice", login_device.sync_detailed(qr_device, client=api))
    step(f"{qr_device}: QR code valid {qr.qr_duration} s at {qr.qr_link}")
    # qr_link is public (no credentials) and unguessable, for showing to a person.
    image = httpx.get(qr.qr_link, timeout=WAIT_SECONDS)
    if image.status_code != HTTPStatus.OK or not image.content.startswith(PNG_SIGNATURE):
        raise Failure(f"GET {qr.qr_link}: HTTP {image.status_code}, not a PNG")
    step(f"{qr_device}: fetched the QR code, a {len(image.content)}-byte PNG")

    scanned = sandbox_phone(api, qr_device, "scan")
    step(f"{qr_device}: the sandbox phone scanned it and linked {scanned['jid']}")
    wait_logged_in(api, receiver, qr_device)

    results(
        "createDevice",
        create_device.sync_detailed(
            client=api,
            body=CreateDeviceRequest(device_id=code_device, display_name="pairing code login"),
        ),
    )
    step(f"{code_device}: created")
    code = results(
        "loginDeviceWithCode",
        login_device_with_code.sync_detailed(code_device, client=api, phone=PHONE),
    )
    step(f"{code_device}: pairing code {code.pair_code} for {PHONE}")
    entered = sandbox_phone(api, code_device, "enter-code")
    step(f"{code_device}: the sandbox phone entered it and linked {entered['jid']}")
    wait_logged_in(api, receiver, code_device)

    devices = results("listDevices", list_devices.sync_detailed(client=api))
    listed = {d.id: d.state for d in devices}
    for device_id in (qr_device, code_device):
        if listed.get(device_id) != DeviceStateName.LOGGED_IN:
            raise Failure(f"listDevices shows {device_id} as {listed.get(device_id)}")
    step(f"devices: {len(devices)} listed, both new ones logged_in")

    # The receiver answered 2xx, so the log marks both logins delivered (written in batches).
    wanted = {qr_device, code_device}
    wait_until(
        "the delivery log to show both logged_in events delivered",
        lambda: True if wanted <= delivered_logins(api, webhook_id) else None,
    )
    step("webhook: the delivery log shows both logged_in events delivered")

    results("logoutDevice", logout_device.sync_detailed(qr_device, client=api))
    logged_out = receiver.wait_for("logged_out", qr_device)
    step(f"{qr_device}: logged out (verified logged_out webhook: {logged_out['data']['reason']})")

    for device_id in (qr_device, code_device):
        results("deleteDevice", delete_device.sync_detailed(device_id, client=api))
        step(f"{device_id}: deleted")
    results("deleteWebhook", delete_webhook.sync_detailed(webhook_id, client=api))
    step(f"webhook: deleted {webhook_id}")


def main() -> int:
    try:
        base_url = os.environ["WAGATE_URL"].rstrip("/")
        credential = f"{os.environ['WAGATE_USER']}:{os.environ['WAGATE_PASSWORD']}"
    except KeyError as missing:
        print(f"sdk example: FAILED: set {missing.args[0]}", file=sys.stderr)
        return 2

    # HTTP Basic is the spec's security scheme; the client sends "Basic <token>" as given.
    api = AuthenticatedClient(
        base_url=base_url,
        token=base64.b64encode(credential.encode()).decode(),
        prefix="Basic",
        timeout=httpx.Timeout(WAIT_SECONDS),
    )
    receiver = Receiver()
    try:
        with api:
            run(api, receiver)
    except (Failure, httpx.HTTPError) as error:
        print(f"sdk example: FAILED: {error}", file=sys.stderr)
        return 1
    finally:
        receiver.close()
    print("sdk example: ok", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

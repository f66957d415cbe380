"""Deploys ``template.yaml`` on ministack and runs the README walkthroughs through it.

Run by infra/scripts/e2e-aws.sh (``make e2e-aws``) with the .venv-ministack interpreter:

    python infra/e2e/main.py --repo . --workdir target/e2e-aws

Steps: a local OpenID provider (HTTPS, RS256 JWKS) and ministack start on 127.0.0.1; the
zips built by infra/scripts/build-lambdas.sh are uploaded and the template is deployed
with CreateStack; the HTTP API's routes and JWT authorizer are created from the
template's own events where ministack left them out; the walkthroughs run through the
API URL; the stack is deleted and ministack stopped, whatever happened. On a failure the
stack's events, the functions' logs, the queues and ministack's own log are printed.

The exit status is 0 when every check passed, 1 when one failed, 2 when the zips are
missing.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
import traceback
from pathlib import Path

import template as tpl
from emulator import Ministack
from idp import AUDIENCE, IdentityProvider
from stack import Stack
from walkthroughs import Walkthroughs

STACK_NAME = "recoup-e2e"
RETRY_SCHEDULER = "RetrySchedulerFunction"


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, required=True, help="the repository root")
    parser.add_argument("--workdir", type=Path, required=True, help="where logs and keys are written")
    parser.add_argument(
        "--retry-schedule",
        default="20s",
        help="the stack's RetrySchedule: each offset costs one retry sweep (the template's rate)",
    )
    return parser.parse_args()


def missing_zips(lambda_dir: Path, template: dict) -> list[str]:
    """The functions whose ``<lambda_dir>/<binary>/bootstrap.zip`` does not exist."""
    return [
        binary for binary in tpl.function_names(template).values() if not (lambda_dir / binary / "bootstrap.zip").is_file()
    ]


def stop_on_signal(signum: int, _frame) -> None:
    """SIGTERM and SIGHUP end the run like Ctrl-C, so the stack is still taken down."""
    raise KeyboardInterrupt(f"signal {signum}")


class Phases:
    """Wall time per step, printed as the run goes and summed at the end."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.times: list[tuple[str, float]] = []
        self._current: tuple[str, float] | None = None

    def begin(self, name: str) -> None:
        """Ends the step in progress and starts ``name``."""
        self.end()
        print(f"== {name}", flush=True)
        self._current = (name, time.monotonic())

    def end(self) -> None:
        """Ends the step in progress."""
        if self._current is not None:
            name, began = self._current
            self.times.append((name, time.monotonic() - began))
            self._current = None

    def summary(self) -> str:
        """One line per step, then the total."""
        self.end()
        lines = [f"  {name:<44} {seconds:6.1f}s" for name, seconds in self.times]
        lines.append(f"  {'total':<44} {time.monotonic() - self.started:6.1f}s")
        return "\n".join(lines)


def print_diagnostics(stack: Stack | None, walk: Walkthroughs | None, emulator: Ministack) -> None:
    """What the stack, its functions, its queues and ministack said, for a failed run."""
    print("\n==== diagnostics", flush=True)
    if stack is not None:
        print("---- stack events (latest)")
        print("\n".join(stack.events()))
        for logical_id in tpl.function_names(stack.template):
            print(f"---- logs of {logical_id}")
            print("\n".join(stack.function_logs(logical_id, limit=30)))
    if walk is not None:
        try:
            print(f"---- queues (visible, in flight): {walk.queue_depths()}")
        except Exception as e:  # noqa: BLE001 (diagnostics must not raise)
            print(f"---- queues: unavailable ({e})")
    print(f"---- ministack log (tail of {emulator.log_path})")
    print(emulator.log_tail())


def run(args: argparse.Namespace) -> int:
    """The whole run; returns the exit status."""
    template = tpl.load(args.repo / "template.yaml")
    lambda_dir = args.repo / "target" / "lambda"
    missing = missing_zips(lambda_dir, template)
    if missing:
        print(
            f"error: no deployment package for {', '.join(missing)} in {lambda_dir}/<function>/bootstrap.zip.\n"
            "Build them first: make build-lambdas (infra/scripts/build-lambdas.sh).",
            file=sys.stderr,
        )
        return 2

    args.workdir.mkdir(parents=True, exist_ok=True)
    phases = Phases()
    phases.begin("identity provider and ministack")
    idp = IdentityProvider(args.workdir)
    idp.start()
    emulator = Ministack(args.workdir, idp.write_ca_bundle())
    stack: Stack | None = None
    walk: Walkthroughs | None = None
    status = 1
    try:
        emulator.start()
        print(f"  ministack on {emulator.endpoint}, issuer {idp.issuer}", flush=True)

        phases.begin("deploy template.yaml")
        stack = Stack(
            emulator,
            STACK_NAME,
            template,
            parameters={
                "JwtIssuer": idp.issuer,
                "JwtAudience": AUDIENCE,
                "RetrySchedule": args.retry_schedule,
                "ReconcileAfter": "30s",
                "PortalUrl": "https://billing.recoup.test/portal",
                "PaymentProvider": "sandbox",
            },
        )
        stack.create(stack.upload_code(lambda_dir))
        for role in stack.grant_send_message_batch():
            print(f"  {role}: sqs:SendMessageBatch granted beside sqs:SendMessage (an emulator-only action)", flush=True)
        created = stack.wire_http_api()
        print(f"  {len(stack.resources)} resources; HTTP API {stack.api_url}; "
              f"{created} routes and the JWT authorizer created through the API Gateway v2 API", flush=True)

        sweep = tpl.schedule_seconds(template, RETRY_SCHEDULER)
        walk = Walkthroughs(stack, idp, retry_offsets=len(args.retry_schedule.split(",")), sweep_seconds=sweep)
        phases.begin("authorizer")
        walk.the_authorizer_lets_only_valid_tokens_through()
        phases.begin("webhooks: an endpoint")
        endpoint = walk.a_webhook_endpoint_is_registered_and_private_addresses_are_refused()
        phases.begin("walkthrough 1: a card, a paid invoice, a declined one")
        declined = walk.a_card_pays_an_invoice_and_a_decline_is_explained()
        phases.begin("webhooks: the dispatcher")
        walk.the_dispatcher_attempts_the_delivery_and_schedules_the_next(endpoint)
        phases.begin(f"walkthrough 2: dunning (retry sweep every {sweep}s)")
        walk.dunning_errors_the_subscription_and_a_new_card_recovers_it(declined)
        phases.begin("queues and dead letters")
        walk.every_queue_drains_and_no_dead_letter_remains()
        status = 0
    except KeyboardInterrupt as e:
        print(f"\ninterrupted ({e or 'Ctrl-C'}); taking the stack down", file=sys.stderr, flush=True)
        status = 130
    except Exception:  # noqa: BLE001 (any failure: report, diagnose, tear down)
        traceback.print_exc()
        print_diagnostics(stack, walk, emulator)
    finally:
        # A second Ctrl-C or SIGTERM must not cut the teardown short.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        phases.begin("teardown")
        try:
            if stack is not None and stack.requested:
                stack.delete()
        except Exception as e:  # noqa: BLE001 (ministack is stopped below regardless)
            print(f"error: the stack was not deleted cleanly: {e}", file=sys.stderr)
            status = status or 1
        finally:
            emulator.stop()
            idp.stop()
        print(phases.summary(), flush=True)
    print("e2e-aws: " + ("passed" if status == 0 else "FAILED"), flush=True)
    return status


def main() -> None:
    """Entry point."""
    signal.signal(signal.SIGTERM, stop_on_signal)
    signal.signal(signal.SIGHUP, stop_on_signal)
    sys.exit(run(parse_args()))


if __name__ == "__main__":
    main()

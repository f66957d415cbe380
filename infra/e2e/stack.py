"""Deploying ``template.yaml`` on ministack, wiring its HTTP API, and taking it down.

The deployment is what ``sam deploy`` does with a packaged template: the zips go to an S3
bucket, the template (``CodeUri`` pointed at them) goes to S3 too, and CloudFormation
creates the stack from its URL with the SAM transform.

ministack creates the HTTP API and its stage but not the routes and the JWT authorizer,
which SAM writes into the API's OpenAPI ``Body`` (ministack imports a ``Body`` only for
REST APIs). :meth:`Stack.wire_http_api` creates them through the API Gateway v2 API, as
the template declares them: one ``AWS_PROXY`` integration (payload 2.0) per function,
one route per ``HttpApi`` event, behind the API's JWT authorizer unless the event says
``Authorizer: NONE``. It does nothing if the routes are already there.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from botocore.exceptions import ClientError

import template as tpl
from emulator import ACCOUNT, REGION, Ministack

ARTIFACT_BUCKET = "recoup-e2e-artifacts"
STACK_TIMEOUT_SECONDS = 300
POLL_SECONDS = 2


class DeployError(RuntimeError):
    """The stack could not be created or deleted."""


@dataclass
class Stack:
    """One deployment of the template on a ministack (``requested`` once CreateStack was sent)."""

    emulator: Ministack
    name: str
    template: dict
    parameters: dict[str, str]
    resources: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    requested: bool = False

    def __post_init__(self) -> None:
        self._cfn = self.emulator.client("cloudformation")
        self._s3 = self.emulator.client("s3")
        self._apigw = self.emulator.client("apigatewayv2")
        self._logs = self.emulator.client("logs")

    # -- deploying ------------------------------------------------------------------------

    def upload_code(self, lambda_dir: Path) -> dict[str, tuple[str, str]]:
        """Uploads ``<lambda_dir>/<binary>/bootstrap.zip`` for every function.

        Returns each function's logical id mapped to the (bucket, key) of its zip.
        """
        self._s3.create_bucket(Bucket=ARTIFACT_BUCKET)
        locations = {}
        for logical_id, binary in tpl.function_names(self.template).items():
            data = (lambda_dir / binary / "bootstrap.zip").read_bytes()
            key = f"{binary}/{hashlib.sha256(data).hexdigest()}.zip"
            self._s3.put_object(Bucket=ARTIFACT_BUCKET, Key=key, Body=data)
            locations[logical_id] = (ARTIFACT_BUCKET, key)
        return locations

    def create(self, code_locations: dict[str, tuple[str, str]]) -> None:
        """Creates the stack from the packaged template and waits for CREATE_COMPLETE."""
        body = tpl.packaged(self.template, code_locations)
        key = f"templates/{hashlib.sha256(body.encode()).hexdigest()}.json"
        self._s3.put_object(Bucket=ARTIFACT_BUCKET, Key=key, Body=body.encode())
        self._cfn.create_stack(
            StackName=self.name,
            TemplateURL=f"{self.emulator.endpoint}/{ARTIFACT_BUCKET}/{key}",
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in self.parameters.items()],
            Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"],
            OnFailure="DO_NOTHING",
        )
        self.requested = True
        status = self._wait_for_status({"CREATE_COMPLETE"}, {"CREATE_FAILED", "ROLLBACK_COMPLETE", "ROLLBACK_FAILED"})
        if status != "CREATE_COMPLETE":
            raise DeployError(f"stack {self.name} ended in {status}")
        self.resources = {
            r["LogicalResourceId"]: r["PhysicalResourceId"]
            for r in self._cfn.describe_stack_resources(StackName=self.name)["StackResources"]
        }
        described = self._cfn.describe_stacks(StackName=self.name)["Stacks"][0]
        self.outputs = {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}

    def _wait_for_status(self, done: set[str], failed: set[str]) -> str:
        """Polls the stack until its status is in ``done`` or ``failed``; returns it."""
        deadline = time.monotonic() + STACK_TIMEOUT_SECONDS
        last = ""
        while time.monotonic() < deadline:
            status = self._status()
            if status != last:
                print(f"  stack {self.name}: {status}", flush=True)
                last = status
            if status in done or status in failed:
                return status
            time.sleep(POLL_SECONDS)
        raise DeployError(f"stack {self.name} still {last} after {STACK_TIMEOUT_SECONDS}s")

    def _status(self) -> str:
        """The stack's status; a deleted stack is no longer found by its name."""
        try:
            stacks = self._cfn.describe_stacks(StackName=self.name)["Stacks"]
        except ClientError as e:
            if "does not exist" in str(e):
                return "DELETE_COMPLETE"
            raise
        return stacks[0]["StackStatus"] if stacks else "DELETE_COMPLETE"

    # -- emulator workarounds -------------------------------------------------------------

    def grant_send_message_batch(self) -> list[str]:
        """Lets every role that may ``sqs:SendMessage`` to a queue also ``sqs:SendMessageBatch`` it.

        AWS authorizes ``SendMessageBatch`` as ``sqs:SendMessage``; ministack (with
        ``AUTH=true``) asks for an ``sqs:SendMessageBatch`` permission, which no AWS policy
        needs. The grant is added to the deployed roles, not to the template, and only where
        the template grants ``sqs:SendMessage``. Returns the roles changed.
        """
        iam = self.emulator.client("iam")
        sqs = self.emulator.client("sqs")
        changed = []
        for logical_id in tpl.function_names(self.template):
            queues = tpl.queues_sent_to(self.template, logical_id)
            if not queues:
                continue
            arns = [
                sqs.get_queue_attributes(QueueUrl=self.resources[q], AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
                for q in queues
            ]
            role = self.resources[f"{logical_id}Role"]
            statement = {"Effect": "Allow", "Action": "sqs:SendMessageBatch", "Resource": arns}
            iam.put_role_policy(
                RoleName=role,
                PolicyName="MinistackSendMessageBatch",
                PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [statement]}),
            )
            changed.append(role)
        return changed

    # -- the HTTP API ---------------------------------------------------------------------

    @property
    def api_id(self) -> str:
        """The id of the deployed HTTP API."""
        return self.resources[tpl.http_api(self.template)]

    @property
    def stage(self) -> str:
        """The API stage (the template's ``Stage`` parameter)."""
        return self.parameters.get("Stage", self.template["Parameters"]["Stage"]["Default"])

    @property
    def api_url(self) -> str:
        """The deployed API's base URL on ministack, stage included."""
        return f"{self.emulator.endpoint}/_aws/execute-api/{self.api_id}/{self.stage}"

    def function_arn(self, logical_id: str) -> str:
        """A deployed function's ARN."""
        return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{self.resources[logical_id]}"

    def wire_http_api(self) -> int:
        """Creates the template's routes and JWT authorizer if ministack left them out.

        Returns how many routes it created (0 when the API already had them all).
        """
        routes = tpl.http_routes(self.template)
        existing = {r["RouteKey"] for r in self._apigw.get_routes(ApiId=self.api_id, MaxResults="500")["Items"]}
        missing = [r for r in routes if r.key not in existing]
        if not missing:
            return 0
        declared = tpl.jwt_authorizer(self.template, self.parameters)
        authorizer_id = self._apigw.create_authorizer(
            ApiId=self.api_id,
            Name=declared.name,
            AuthorizerType="JWT",
            IdentitySource=[declared.identity_source],
            JwtConfiguration={"Issuer": declared.issuer, "Audience": declared.audience},
        )["AuthorizerId"]
        integrations = {}
        for route in missing:
            if route.function not in integrations:
                integrations[route.function] = self._apigw.create_integration(
                    ApiId=self.api_id,
                    IntegrationType="AWS_PROXY",
                    IntegrationUri=self.function_arn(route.function),
                    PayloadFormatVersion="2.0",
                )["IntegrationId"]
            auth = {"AuthorizationType": "JWT", "AuthorizerId": authorizer_id} if route.authorized else {
                "AuthorizationType": "NONE"
            }
            self._apigw.create_route(
                ApiId=self.api_id, RouteKey=route.key, Target=f"integrations/{integrations[route.function]}", **auth
            )
        stages = {s["StageName"]: s for s in self._apigw.get_stages(ApiId=self.api_id)["Items"]}
        if self.stage not in stages:
            raise DeployError(f"the HTTP API has no stage {self.stage!r}: {sorted(stages)}")
        if not stages[self.stage].get("AutoDeploy"):
            deployment = self._apigw.create_deployment(ApiId=self.api_id)["DeploymentId"]
            self._apigw.update_stage(ApiId=self.api_id, StageName=self.stage, DeploymentId=deployment)
        return len(missing)

    # -- taking it down -------------------------------------------------------------------

    def delete(self) -> None:
        """Deletes the stack and waits until it is gone."""
        self._cfn.delete_stack(StackName=self.name)
        status = self._wait_for_status({"DELETE_COMPLETE"}, {"DELETE_FAILED"})
        if status != "DELETE_COMPLETE":
            raise DeployError(f"stack {self.name} ended in {status}")

    # -- diagnostics ----------------------------------------------------------------------

    def events(self, limit: int = 40) -> list[str]:
        """The stack's latest events, oldest first, one line each."""
        try:
            events = self._cfn.describe_stack_events(StackName=self.name)["StackEvents"][:limit]
        except Exception as e:  # noqa: BLE001 (diagnostics must not raise)
            return [f"(no stack events: {e})"]
        return [
            f"{e['Timestamp']} {e['LogicalResourceId']} {e['ResourceStatus']} {e.get('ResourceStatusReason', '')}"
            for e in reversed(events)
        ]

    def function_logs(self, logical_id: str, limit: int = 60) -> list[str]:
        """The last log lines ministack recorded for a function (its CloudWatch log group)."""
        name = self.resources.get(logical_id)
        if name is None:
            return ["(not deployed)"]
        try:
            events = self._logs.filter_log_events(logGroupName=f"/aws/lambda/{name}", limit=10000)["events"]
        except self._logs.exceptions.ResourceNotFoundException:
            return ["(never invoked)"]
        except Exception as e:  # noqa: BLE001 (diagnostics must not raise)
            return [f"(no logs: {e})"]
        return [e["message"].rstrip() for e in events[-limit:]]

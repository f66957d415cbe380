"""Reading ``template.yaml`` and packaging it for a deployment.

The template is read as written: CloudFormation's short-form tags (``!Ref X``,
``!GetAtt A.B``, ``!Sub ...``) become their long forms (``{"Ref": "X"}``,
``{"Fn::GetAtt": ["A", "B"]}``, ``{"Fn::Sub": ...}``), which CloudFormation accepts in
a JSON template. Packaging changes one property, each function's ``CodeUri``, to the
zip uploaded for it; everything else (``Handler`` included) is deployed as written.

The HTTP routes are the template's own: every ``HttpApi`` event of every function, with
the authorizer it runs behind (the API's default, or none where the event says
``Authorizer: NONE``).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import yaml

SERVERLESS_FUNCTION = "AWS::Serverless::Function"
SERVERLESS_HTTP_API = "AWS::Serverless::HttpApi"


class _CloudFormationLoader(yaml.SafeLoader):
    """A YAML loader that turns CloudFormation's short-form tags into long forms."""


def _long_form(loader: yaml.SafeLoader, suffix: str, node: yaml.Node):
    """``!Name value`` as ``{"Fn::Name": value}`` (``Ref`` and ``Condition`` keep their names)."""
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    key = suffix if suffix in ("Ref", "Condition") else f"Fn::{suffix}"
    return {key: value}


_CloudFormationLoader.add_multi_constructor("!", _long_form)


def load(path: Path) -> dict:
    """The template as JSON-ready data, intrinsic functions in their long forms."""
    with path.open(encoding="utf-8") as f:
        return yaml.load(f, Loader=_CloudFormationLoader)  # noqa: S506 (a SafeLoader subclass)


def function_names(template: dict) -> dict[str, str]:
    """Each function's logical id mapped to its binary's name (``BuildProperties.Binary``)."""
    names = {}
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] == SERVERLESS_FUNCTION:
            names[logical_id] = resource["Metadata"]["BuildProperties"]["Binary"]
    return names


def packaged(template: dict, code_locations: dict[str, tuple[str, str]]) -> str:
    """The template as a JSON document with each function's ``CodeUri`` set to its zip.

    ``code_locations`` maps a function's logical id to the (bucket, key) of its upload.
    """
    out = copy.deepcopy(template)
    for logical_id, (bucket, key) in code_locations.items():
        out["Resources"][logical_id]["Properties"]["CodeUri"] = {"Bucket": bucket, "Key": key}
    return json.dumps(out, indent=1)


@dataclass(frozen=True)
class JwtAuthorizer:
    """The HTTP API's JWT authorizer as the template declares it (values resolved)."""

    name: str
    identity_source: str
    issuer: str
    audience: list[str]


@dataclass(frozen=True)
class HttpRoute:
    """One ``HttpApi`` event: its route and the function that serves it."""

    function: str
    method: str
    path: str
    authorized: bool

    @property
    def key(self) -> str:
        """API Gateway's route key, ``"POST /v1/invoices"``."""
        return f"{self.method} {self.path}"


def _resolve(value, parameters: dict[str, str]):
    """A value with ``Ref``s to parameters replaced by the parameters' values."""
    if isinstance(value, dict) and set(value) == {"Ref"} and value["Ref"] in parameters:
        return parameters[value["Ref"]]
    if isinstance(value, list):
        return [_resolve(v, parameters) for v in value]
    return value


def http_api(template: dict) -> str:
    """The logical id of the template's one HTTP API."""
    apis = [lid for lid, r in template["Resources"].items() if r["Type"] == SERVERLESS_HTTP_API]
    if len(apis) != 1:
        raise ValueError(f"expected one {SERVERLESS_HTTP_API} in the template, found {apis}")
    return apis[0]


def jwt_authorizer(template: dict, parameters: dict[str, str]) -> JwtAuthorizer:
    """The HTTP API's default authorizer, which must be a JWT authorizer."""
    auth = template["Resources"][http_api(template)]["Properties"]["Auth"]
    name = auth["DefaultAuthorizer"]
    declared = auth["Authorizers"][name]
    config = declared["JwtConfiguration"]
    return JwtAuthorizer(
        name=name,
        identity_source=declared["IdentitySource"],
        issuer=_resolve(config["issuer"], parameters),
        audience=_resolve(config["audience"], parameters),
    )


def http_routes(template: dict) -> list[HttpRoute]:
    """Every ``HttpApi`` event of the template's functions, in template order."""
    api = http_api(template)
    routes = []
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] != SERVERLESS_FUNCTION:
            continue
        for event_name, event in (resource["Properties"].get("Events") or {}).items():
            if event["Type"] != "HttpApi":
                continue
            props = event["Properties"]
            if props.get("ApiId") != {"Ref": api}:
                raise ValueError(f"{logical_id}.{event_name} is not on the template's HTTP API {api}")
            authorizer = (props.get("Auth") or {}).get("Authorizer")
            routes.append(
                HttpRoute(
                    function=logical_id,
                    method=props["Method"].upper(),
                    path=props["Path"],
                    authorized=authorizer != "NONE",
                )
            )
    return routes


def schedule_seconds(template: dict, logical_id: str) -> int:
    """The period of a function's ``rate(N minute[s])`` schedule event, in seconds."""
    for event in template["Resources"][logical_id]["Properties"]["Events"].values():
        if event["Type"] == "Schedule":
            rate = event["Properties"]["Schedule"]
            count, unit = rate.removeprefix("rate(").removesuffix(")").split()
            if not unit.startswith("minute"):
                raise ValueError(f"{logical_id}: unexpected schedule {rate}")
            return int(count) * 60
    raise ValueError(f"{logical_id} has no Schedule event")


def queues_sent_to(template: dict, logical_id: str) -> list[str]:
    """The queues (logical ids) a function's policies allow ``sqs:SendMessage`` on."""
    queues = []
    for policy in template["Resources"][logical_id]["Properties"].get("Policies") or []:
        for statement in policy.get("Statement", []) if isinstance(policy, dict) else []:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            if statement["Effect"] != "Allow" or "sqs:SendMessage" not in actions:
                continue
            resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            for resource in resources:
                target, attribute = resource["Fn::GetAtt"]
                if attribute != "Arn":
                    raise ValueError(f"{logical_id}: sqs:SendMessage on {resource}, not a queue ARN")
                queues.append(target)
    return queues

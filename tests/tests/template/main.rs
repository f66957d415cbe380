//! `template.yaml` against the code. The template is written by hand; these tests fail when
//! it and the code disagree: the function resources against the crates under `functions/`,
//! the API events against each crate's `ROUTES`, the EventBridge rules and queues against
//! `recoup_lambda::routing`, the table against the store's keys and indexes, the
//! environment against `Settings::from_lookup`, and each function's IAM grants against
//! what it does.
//!
//! Every check returns the problems it found instead of panicking on the first, so one run
//! lists everything that is out of step, and the last test can show that each check
//! notices a template edited to disagree with the code.
//!
//! CloudFormation's short-form tags (`!Ref X`, `!GetAtt A.B`, `!Sub ...`) arrive from
//! serde_yaml_ng as tagged values; [`to_json`] rewrites them into the long forms
//! (`{"Ref": "X"}`, `{"Fn::GetAtt": ["A", "B"]}`, `{"Fn::Sub": ...}`), so the checks see one
//! shape whichever form the template uses.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use recoup_functions::{Authorizer, Trigger};
use recoup_lambda::app::Settings;
use recoup_lambda::http::Route;
use recoup_lambda::routing::{self, MAX_RECEIVE_COUNT, RULES};
use recoup_shared::domain::events::{EVENT_SOURCE, EventPayload};
use recoup_shared::store::Index;
use serde_json::{Map, Value as Json, json};

mod bus;
mod code;
mod environment;
mod functions;
mod http;
mod iam;
mod loader;
mod mutations;
mod table;

use bus::*;
use code::*;
use environment::*;
use functions::*;
use http::*;
use iam::*;
use loader::*;
use table::*;

type Problems = Vec<String>;

pub fn all_problems(t: &Json) -> Problems {
    [
        check_functions(t),
        check_http_routes(t),
        check_authorizer(t),
        check_rules(t),
        check_queues(t),
        check_sqs_consumers(t),
        check_schedules(t),
        check_table(t),
        check_environment(t),
        check_iam(t),
        iam::check_webhook_secrets(t),
    ]
    .concat()
}

#[track_caller]
pub fn assert_none(problems: Problems) {
    assert!(problems.is_empty(), "template.yaml disagrees with the code:\n  - {}", problems.join("\n  - "));
}

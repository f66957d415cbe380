//! The Lambda entry points: build the [`App`] once per cold start, then serve events
//! with it until the runtime stops the process.

use std::convert::Infallible;

use futures::future::BoxFuture;
use lambda_http::{Body, Request, Response};
use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::App;
use crate::app::{from_env, init_tracing};

pub type HttpHandler = for<'a> fn(&'a App, Request) -> BoxFuture<'a, Response<Body>>;
pub type EventHandler<E, R> = for<'a> fn(&'a App, E) -> BoxFuture<'a, Result<R, recoup_shared::error::Error>>;

/// An API Gateway HTTP API function.
pub async fn http(handler: HttpHandler) -> Result<(), lambda_http::Error> {
    init_tracing();
    let app = from_env().await?;
    let app = &app;
    lambda_http::run(lambda_http::service_fn(move |req: Request| async move {
        Ok::<_, Infallible>(handler(app, req).await)
    }))
    .await
}

/// A function invoked with an event payload (SQS batch, schedule).
pub async fn events<E, R>(handler: EventHandler<E, R>) -> Result<(), lambda_runtime::Error>
where
    E: DeserializeOwned + Send + 'static,
    R: Serialize + Send + 'static,
{
    init_tracing();
    serve_events(from_env().await?, handler).await
}

/// A function invoked with an event payload that sends customer emails (through SES).
pub async fn events_sending_email<E, R>(handler: EventHandler<E, R>) -> Result<(), lambda_runtime::Error>
where
    E: DeserializeOwned + Send + 'static,
    R: Serialize + Send + 'static,
{
    init_tracing();
    serve_events(crate::app::from_env_sending_email().await?, handler).await
}

async fn serve_events<E, R>(app: App, handler: EventHandler<E, R>) -> Result<(), lambda_runtime::Error>
where
    E: DeserializeOwned + Send + 'static,
    R: Serialize + Send + 'static,
{
    let app = &app;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<E>| async move {
        // A failed invocation is retried by its trigger; the code names the failure in
        // the Lambda error report.
        handler(app, event.payload).await.map_err(|e| {
            e.log_at_edge("invocation");
            Diagnostic { error_type: e.code.as_str().to_owned(), error_message: e.message }
        })
    }))
    .await
}

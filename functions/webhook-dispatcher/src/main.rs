#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    recoup_lambda::run::events(|app, event| Box::pin(webhook_dispatcher::handle(app, event))).await
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    recoup_lambda::run::events(|app, event| Box::pin(expiry_reminder::handle(app, event))).await
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    recoup_lambda::run::events_sending_email(|app, event| Box::pin(notifier::handle(app, event))).await
}

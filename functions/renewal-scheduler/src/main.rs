#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    recoup_lambda::run::events(|app, event| Box::pin(renewal_scheduler::handle(app, event))).await
}

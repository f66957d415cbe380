#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    recoup_lambda::run::events(|app, event| Box::pin(charge_worker::handle(app, event))).await
}

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    recoup_lambda::run::http(|app, req| Box::pin(wallet_api::handle(app, req))).await
}

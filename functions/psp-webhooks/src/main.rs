#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    recoup_lambda::run::http(|app, req| Box::pin(psp_webhooks::handle(app, req))).await
}

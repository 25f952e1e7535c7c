use dioxus::prelude::*;
fn main() { dioxus::launch(App); }
#[component]
fn App() -> Element {
    let mut n = use_signal(|| 0);
    rsx! { button { onclick: move |_| { n += 1; spawn(async move {
        let mut c = confab_proto::chat::v1::chat_service_client::ChatServiceClient::new(tonic_web_wasm_client::Client::new("/".into()));
        let _ = c.list_models(confab_proto::chat::v1::ListModelsRequest{}).await;
    }); }, "{n}" } }
}

//! The model providers this instance can use, and which model is the default.

use std::sync::Arc;

use crate::error::ChatError;
use crate::provider::{ModelProvider, ModelSpec};

pub struct Providers {
    list: Vec<Arc<dyn ModelProvider>>,
    default_model: String,
}

impl Providers {
    /// The first provider's default model is the default.
    pub fn new(list: Vec<Arc<dyn ModelProvider>>) -> Self {
        let default_model = list.first().map(|p| p.default_model()).unwrap_or_default();
        Self {
            list,
            default_model,
        }
    }

    pub fn default_model(&self) -> &str {
        &self.default_model
    }

    /// The provider serving `model` (empty: the default) and what the model can do.
    pub fn resolve(&self, model: &str) -> Result<(Arc<dyn ModelProvider>, ModelSpec), ChatError> {
        let model = if model.is_empty() {
            &self.default_model
        } else {
            model
        };
        for p in &self.list {
            if let Some(spec) = p.models().into_iter().find(|m| m.id == model) {
                return Ok((p.clone(), spec));
            }
        }
        Err(ChatError::InvalidArgument(format!(
            "unknown model {model:?}; ListModels shows the available ones"
        )))
    }

    pub fn all(&self) -> Vec<ModelSpec> {
        self.list.iter().flat_map(|p| p.models()).collect()
    }
}

// External developer creates: my-weather-plugin/src/lib.rs
use backworks_plugin_sdk::*;

#[derive(Default)]
pub struct WeatherPlugin {
    api_key: String,
}

#[async_trait]
impl BackworksPlugin for WeatherPlugin {
    fn name(&self) -> &str { "weather" }
    fn version(&self) -> &str { "1.0.0" }
    fn description(&self) -> &str { "Weather API integration" }
    
    async fn initialize(&self, config: &Value) -> BackworksResult<()> {
        // Initialize with API key from config
        Ok(())
    }
    
    async fn process_endpoint_data(&self, endpoint: &str, method: &str, data: &str) -> BackworksResult<Option<String>> {
        if endpoint == "/weather" && method == "GET" {
            // Call weather API and return data
            Ok(Some(json!({"temperature": 25, "humidity": 60}).to_string()))
        } else {
            Ok(None)
        }
    }
}

// Export plugin
export_plugin!(WeatherPlugin);

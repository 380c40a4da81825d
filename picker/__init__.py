"""The endpoint picker: which node serves each request, for Envoy, by the Gateway API Inference Extension's
protocol (an ext_proc server that names the chosen `ip:port` in `x-gateway-destination-endpoint`)."""

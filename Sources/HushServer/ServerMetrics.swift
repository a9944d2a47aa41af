import Prometheus

/// The server's Prometheus metrics, on a registry of its own (several servers can share a
/// process in tests). Nothing here carries a key, a room id or a payload.
public struct ServerMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    let connections: Gauge
    let messages: Counter
    let rotations: Counter
    let refused: Counter
    let rateLimited: Counter
    let closed: Counter
    let refusedConnections: Counter

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        connections = registry.makeGauge(descriptor: MetricNameDescriptor(namespace: "hush", metricName: "connections", unitName: "", helpText: "Established Secure Session connections"))
        messages = registry.makeCounter(descriptor: MetricNameDescriptor(namespace: "hush", metricName: "messages", unitName: "total", helpText: "Messages committed"))
        rotations = registry.makeCounter(descriptor: MetricNameDescriptor(namespace: "hush", metricName: "rotations", unitName: "total", helpText: "Key rotations committed"))
        refused = registry.makeCounter(descriptor: MetricNameDescriptor(namespace: "hush", metricName: "refused_requests", unitName: "total", helpText: "Requests answered with an error"))
        rateLimited = registry.makeCounter(descriptor: MetricNameDescriptor(namespace: "hush", metricName: "rate_limited_requests", unitName: "total", helpText: "Requests refused for the per-connection request budget"))
        closed = registry.makeCounter(descriptor: MetricNameDescriptor(namespace: "hush", metricName: "closed_connections", unitName: "total", helpText: "Connections closed for a protocol violation, a malformed or late request head, or slow reading"))
        refusedConnections = registry.makeCounter(descriptor: MetricNameDescriptor(namespace: "hush", metricName: "refused_connections", unitName: "total", helpText: "Connections answered 503 or 429 at a connection cap and closed"))
    }

    public func render() -> String {
        var buffer: [UInt8] = []
        registry.emit(into: &buffer)
        return String(decoding: buffer, as: UTF8.self)
    }
}

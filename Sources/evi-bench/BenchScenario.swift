import EventInterface

/// How one `--scenario` measures: a run's fields (printed as text or JSON) and its ratio to the
/// run's floor (1 where there is none). A new scenario is a type conforming to this, a case in
/// ``Bench/Scenario`` and its line in ``Bench/Scenario/measurement``.
protocol BenchScenario {
    func measure(_ bench: Bench) async throws -> (fields: [EventField], ratio: Double)
    /// Whether the text output ends with "datagrams/s vs floor" (a send loop of the same bytes).
    var hasSendLoopFloor: Bool { get }
}

extension BenchScenario {
    var hasSendLoopFloor: Bool { false }
}

/// udp, parallel3, roundrobin3, failover-dead, mi-http, relay-udp, relay-tcp, tcp-reliable.
struct LoopbackScenario: BenchScenario {
    var hasSendLoopFloor: Bool { true }
    func measure(_ bench: Bench) async throws -> (fields: [EventField], ratio: Double) {
        try await bench.measureLoopback()
    }
}

/// tcp-reliable --tls: plain and TLS in the same run.
struct TCPOverTLSScenario: BenchScenario {
    func measure(_ bench: Bench) async throws -> (fields: [EventField], ratio: Double) {
        try await bench.measureTCPOverTLS()
    }
}

struct KafkaScenario: BenchScenario {
    func measure(_ bench: Bench) async throws -> (fields: [EventField], ratio: Double) {
        try await bench.measureKafka()
    }
}

struct RabbitMQScenario: BenchScenario {
    func measure(_ bench: Bench) async throws -> (fields: [EventField], ratio: Double) {
        try await bench.measureRabbitMQ()
    }
}

struct SQSScenario: BenchScenario {
    func measure(_ bench: Bench) async throws -> (fields: [EventField], ratio: Double) {
        try await bench.measureSQS()
    }
}

struct WebhookScenario: BenchScenario {
    func measure(_ bench: Bench) async throws -> (fields: [EventField], ratio: Double) {
        try await bench.measureWebhook()
    }
}

struct SSEScenario: BenchScenario {
    func measure(_ bench: Bench) async throws -> (fields: [EventField], ratio: Double) {
        try await bench.measureSSE()
    }
}

struct ClusterScenario: BenchScenario {
    func measure(_ bench: Bench) async throws -> (fields: [EventField], ratio: Double) {
        try await bench.measureCluster()
    }
}

extension Bench.Scenario {
    /// What measures this scenario.
    var measurement: any BenchScenario {
        switch self {
        case .udp, .parallel3, .roundrobin3, .failoverDead, .miHTTP, .relayUDP, .relayTCP, .tcpReliable:
            LoopbackScenario()
        case .kafka: KafkaScenario()
        case .rabbitmq: RabbitMQScenario()
        case .sqs: SQSScenario()
        case .webhook: WebhookScenario()
        case .sse: SSEScenario()
        case .cluster: ClusterScenario()
        }
    }
}

extension Bench {
    /// This run's scenario, with its options (`tcp-reliable --tls` measures plain and TLS).
    var measurement: any BenchScenario {
        scenario == .tcpReliable && tls ? TCPOverTLSScenario() : scenario.measurement
    }
}

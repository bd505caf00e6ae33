import EventDatagram
import EventFlatstore
import EventInterface
import EventKafka
import EventRabbitMQ
import EventSQS
import EventStream
import EventVirtual
import EventWebhook
import EventXMLRPC

// The one file that names the transport modules: a new one is its folder, its entry in
// `Package.swift` and one line in `all`.

public enum BuiltInModules {
    /// The modules this build has, in the order `modules:` lists them.
    public static let all: [any EventModule.Type] = [
        VirtualModule.self, DatagramModule.self, FlatstoreModule.self, StreamModule.self, XMLRPCModule.self,
        RabbitMQModule.self, KafkaModule.self, SQSModule.self, WebhookModule.self,
    ]

    /// The events a virtual socket raises when a member goes down or comes back (`evi demo`
    /// watches them).
    public static let memberNotices = [VirtualTransport.memberDownEvent, VirtualTransport.memberUpEvent]

    /// A receiver for `evi listen` and `evi demo`: `udp:HOST:PORT` or `unix:/PATH` (datagrams,
    /// from the datagram module), or `tcp:HOST:PORT` (JSON messages; reliable-mode requests
    /// answered "OK"). Port 0 picks a free one.
    public static func receiver(
        socket: String, onMessage: @escaping @Sendable ([UInt8]) -> Void
    ) throws(SocketError) -> any MessageReceiver {
        if socket.hasPrefix("tcp:") { return try TCPJSONListener(socket: socket, onMessage: onMessage) }
        return try DatagramListener(socket: socket, onDatagram: onMessage)
    }
}

extension DatagramListener: MessageReceiver {}

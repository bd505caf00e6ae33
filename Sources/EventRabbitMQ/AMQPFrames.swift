import EventInterface
import NIOCore

/// The publishing subset of AMQP 0-9-1: frame layout and the few methods a confirming publisher
/// sends and receives. Written on SwiftNIO rather than wrapping librabbitmq: that library is
/// blocking (a thread per connection, a pause of every publish behind a confirm), and its
/// login is variadic; on NIO, publishes are pipelined and confirms arrive asynchronously.
enum AMQP {
    static let protocolHeader: [UInt8] = Array("AMQP".utf8) + [0, 0, 9, 1]
    static let frameEnd: UInt8 = 0xCE

    enum FrameType: UInt8 {
        case method = 1
        case header = 2
        case body = 3
        case heartbeat = 8
    }

    struct Frame {
        var type: UInt8
        var channel: UInt16
        var payload: ByteBuffer
    }

    /// The largest frame evi accepts from a broker: the frame size it negotiates (`frame_max`,
    /// at most 131,072) — a peer announcing more is broken or hostile, and is not buffered for.
    static let maximumFrameSize = 131_072

    /// Reads one whole frame from `buffer`, or nil when more bytes are needed.
    static func readFrame(_ buffer: inout ByteBuffer) throws -> Frame? {
        guard buffer.readableBytes >= 7,
            let size = buffer.getInteger(at: buffer.readerIndex + 3, as: UInt32.self)
        else { return nil }
        guard size <= maximumFrameSize else {
            throw AMQPError("frame of \(size) bytes from the broker exceeds frame_max \(maximumFrameSize)")
        }
        guard buffer.readableBytes >= 8 + Int(size) else { return nil }
        guard let type = buffer.readInteger(as: UInt8.self), let channel = buffer.readInteger(as: UInt16.self),
            buffer.readInteger(as: UInt32.self) != nil, let payload = buffer.readSlice(length: Int(size)),
            buffer.readInteger(as: UInt8.self) == frameEnd
        else { throw AMQPError("malformed frame") }
        return Frame(type: type, channel: channel, payload: payload)
    }

    /// `message-id` in a content header's property flags.
    static let messageIDFlag: UInt16 = 0x0080

    /// The `message-id` of a mandatory publish: its delivery tag.
    static func messageID(_ tag: UInt64) -> String { "evi-\(tag)" }

    /// The delivery tag of a returned message, from its content header (class, weight, body size,
    /// property flags, then the properties in flag order), or nil when it is not one of ours.
    static func returnedDeliveryTag(header: inout ByteBuffer) -> UInt64? {
        guard header.readInteger(as: UInt16.self) == 60, header.readInteger(as: UInt16.self) != nil,
            header.readInteger(as: UInt64.self) != nil, let flags = header.readInteger(as: UInt16.self),
            flags & messageIDFlag != 0
        else { return nil }
        // content-type, content-encoding (short strings), headers (table), delivery-mode, priority
        // (octets), correlation-id, reply-to, expiration (short strings), then message-id.
        if flags & 0x8000 != 0, header.readShortString() == nil { return nil }
        if flags & 0x4000 != 0, header.readShortString() == nil { return nil }
        if flags & 0x2000 != 0 {
            guard let length = header.readInteger(as: UInt32.self), header.readSlice(length: Int(length)) != nil
            else { return nil }
        }
        if flags & 0x1000 != 0, header.readInteger(as: UInt8.self) == nil { return nil }
        if flags & 0x0800 != 0, header.readInteger(as: UInt8.self) == nil { return nil }
        for bit: UInt16 in [0x0400, 0x0200, 0x0100] where flags & bit != 0 {
            if header.readShortString() == nil { return nil }
        }
        guard let id = header.readShortString(), id.hasPrefix("evi-") else { return nil }
        return UInt64(id.dropFirst(4))
    }

    static func writeFrame(
        type: FrameType, channel: UInt16, into buffer: inout ByteBuffer, payload: (inout ByteBuffer) -> Void
    ) {
        buffer.writeInteger(type.rawValue)
        buffer.writeInteger(channel)
        let sizeIndex = buffer.writerIndex
        buffer.writeInteger(UInt32(0))
        let start = buffer.writerIndex
        payload(&buffer)
        buffer.setInteger(UInt32(buffer.writerIndex - start), at: sizeIndex)
        buffer.writeInteger(frameEnd)
    }

    static func writeMethod(
        _ classID: UInt16, _ methodID: UInt16, channel: UInt16, into buffer: inout ByteBuffer,
        arguments: (inout ByteBuffer) -> Void = { _ in }
    ) {
        writeFrame(type: .method, channel: channel, into: &buffer) { payload in
            payload.writeInteger(classID)
            payload.writeInteger(methodID)
            arguments(&payload)
        }
    }
}

struct AMQPError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

extension ByteBuffer {
    mutating func writeShortString(_ text: String) {
        let bytes = Array(text.utf8.prefix(255))
        writeInteger(UInt8(bytes.count))
        writeBytes(bytes)
    }

    mutating func writeLongString(_ bytes: [UInt8]) {
        writeInteger(UInt32(bytes.count))
        writeBytes(bytes)
    }

    /// A field table of string values, and with `flags` a nested table `capabilities` of those
    /// set true (what a client announces it understands, in `connection.start-ok`).
    mutating func writeTable(_ entries: [(String, String)], capabilities flags: [String] = []) {
        let sizeIndex = writerIndex
        writeInteger(UInt32(0))
        let start = writerIndex
        for (key, value) in entries {
            writeShortString(key)
            writeInteger(UInt8(ascii: "S"))
            writeLongString(Array(value.utf8))
        }
        if !flags.isEmpty {
            writeShortString("capabilities")
            writeInteger(UInt8(ascii: "F"))
            let nestedSizeIndex = writerIndex
            writeInteger(UInt32(0))
            let nestedStart = writerIndex
            for flag in flags {
                writeShortString(flag)
                writeInteger(UInt8(ascii: "t"))
                writeInteger(UInt8(1))
            }
            setInteger(UInt32(writerIndex - nestedStart), at: nestedSizeIndex)
        }
        setInteger(UInt32(writerIndex - start), at: sizeIndex)
    }

    mutating func readShortString() -> String? {
        guard let length = readInteger(as: UInt8.self), let bytes = readBytes(length: Int(length)) else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// One message a consumer received: its body (nil when larger than an ingress reads), and how to
/// settle it. Settle each exactly once, from any thread.
struct AMQPDelivery: Sendable {
    /// The largest body kept (``IngressDecoder/maximumMessageSize``); a larger one is rejected.
    static let maximumBodySize = IngressDecoder.maximumMessageSize

    enum Settlement: Sendable {
        /// `basic.ack`: done with.
        case ack
        /// `basic.reject` without requeue: never acceptable (a dead-letter exchange takes it).
        case reject
        /// `basic.reject` with requeue, a second later: not taken now, to be handed over again.
        case requeue
    }

    let body: [UInt8]?
    let settleAs: @Sendable (Settlement) -> Void

    /// `true` acks, `false` rejects without requeue.
    func settle(_ accepted: Bool) { settleAs(accepted ? .ack : .reject) }
    func requeue() { settleAs(.requeue) }
}

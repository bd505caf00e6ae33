import EventInterface

/// The XML-RPC `methodCall` evi posts (Docs/sockets.md; layout as OpenSIPS writes it,
/// `../vectors/transport_xmlrpc.json`): the event name as the first `<param>`, then each
/// parameter, with `<name>` when named, or all named ones packed in one `<struct>`.
public enum XMLRPCBody {
    public static func encode(method: String, event: String, params: EventParams, useStructParam: Bool) -> [UInt8] {
        var xml = "<?xml version=\"1.0\"?>\n<methodCall>\n<methodName>\(escape(method))</methodName>\n<params>\n"
        xml += "<param>\n<value><string>\(escape(event))</string></value>\n</param>\n"
        switch params {
        case .none: break
        case .named(let fields) where useStructParam:
            xml += "<param>\n<value>\(value(.object(fields)))</value>\n</param>\n"
        case .named(let fields):
            for field in fields {
                xml += "<param>\n<name>\(escape(field.name))</name>\n<value>\(value(field.value))</value>\n</param>\n"
            }
        case .positional(let values):
            for item in values { xml += "<param>\n<value>\(value(item))</value>\n</param>\n" }
        }
        xml += "</params>\n</methodCall>"
        return Array(xml.utf8)
    }

    /// One value with its XML-RPC type: `<int>` within 32 bits, `<i8>` beyond.
    static func value(_ value: EventValue) -> String {
        switch value {
        case .string(let text): return "<string>\(escape(text))</string>"
        case .int(let number):
            return Int32(exactly: number) != nil ? "<int>\(number)</int>" : "<i8>\(number)</i8>"
        case .double(let number): return number.isFinite ? "<double>\(number)</double>" : "<nil/>"
        case .bool(let flag): return "<boolean>\(flag ? 1 : 0)</boolean>"
        case .null: return "<nil/>"
        case .array(let values):
            return "<array><data>" + values.map { "<value>\(Self.value($0))</value>" }.joined() + "</data></array>"
        case .object(let fields):
            return "<struct>"
                + fields.map {
                    "<member><name>\(escape($0.name))</name><value>\(Self.value($0.value))</value></member>"
                }
                .joined() + "</struct>"
        }
    }

    /// `&`, `<` and `>` as entities (OpenSIPS writes them raw, making invalid XML); characters XML
    /// 1.0 cannot carry (controls other than tab, CR, LF) become U+FFFD.
    static func escape(_ text: String) -> String {
        var result = ""
        result.reserveCapacity(text.utf8.count)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "&": result += "&amp;"
            case "<": result += "&lt;"
            case ">": result += "&gt;"
            case "\r": result += "&#13;"  // a raw CR would be read back as LF
            case "\t", "\n": result.unicodeScalars.append(scalar)
            default:
                if scalar.value < 0x20 || scalar.value == 0xFFFE || scalar.value == 0xFFFF {
                    result += "\u{FFFD}"
                } else {
                    result.unicodeScalars.append(scalar)
                }
            }
        }
        return result
    }
}

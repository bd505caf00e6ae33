import EventInterface

extension ManagementInterface {
    /// `evi:ingress`: every ingress with what it received, refused (by reason) and the
    /// connections it holds:
    /// `{"Ingress":[{"socket":…,"received":N,"rejected":{"REASON":N,…},"connections":N}]}`.
    /// Ingresses are not subscribers: `subscribers_list` keeps OpenSIPS' shape.
    public func registerIngressCommand(_ ingresses: [(ingress: any EventIngress, sink: IngressSink)]) {
        register(
            MICommand(
                names: ["evi:ingress"], parameterSets: [[]],
                handler: .immediate { _ in
                    [
                        "Ingress": .array(
                            ingresses.map { ingress, sink in
                                .object([
                                    EventField("socket", .string(ingress.socket)),
                                    EventField("received", .int(Int64(sink.received))),
                                    EventField(
                                        "rejected",
                                        .object(sink.rejected.map { EventField($0.reason, .int(Int64($0.count))) })),
                                    EventField("connections", .int(Int64(ingress.connections))),
                                ])
                            })
                    ]
                }))
    }
}

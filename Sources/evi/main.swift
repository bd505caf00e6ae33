import ArgumentParser
import Prometheus
import ServiceLifecycle
import Yams
print("evi")

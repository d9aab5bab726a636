"""Line sinks: verdicts and alarms out to the plant (MQTT broker, OPC UA server, a PLC over OPC UA).

Each sink is a consumer group of its own on the results (and alarms) topic and commits an offset
only after its far end took the message (`loop.SinkLoop`).
"""

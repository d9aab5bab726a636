#!/usr/bin/env bash
# Fetch the Apache Kafka broker jars (pinned in infra/kafka/pom.xml) from Maven
# Central into infra/kafka/target/lib. Idempotent: does nothing when the jars of
# the pinned version are already there. Needs a JDK (java) and Maven (mvn).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
POM_DIR="$ROOT/infra/kafka"
LIB_DIR="$POM_DIR/target/lib"

KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM_DIR/pom.xml" | head -n1)"
LOG4J_VERSION="$(sed -n 's:.*<log4j2.version>\(.*\)</log4j2.version>.*:\1:p' "$POM_DIR/pom.xml" | head -n1)"
if [[ -z "$KAFKA_VERSION" || -z "$LOG4J_VERSION" ]]; then
  echo "kafka_jars.sh: cannot read kafka.version/log4j2.version from $POM_DIR/pom.xml" >&2
  exit 1
fi

if [[ -f "$LIB_DIR/kafka_2.13-$KAFKA_VERSION.jar" \
   && -f "$LIB_DIR/kafka-clients-$KAFKA_VERSION.jar" \
   && -f "$LIB_DIR/log4j-core-$LOG4J_VERSION.jar" \
   && -f "$LIB_DIR/.complete-$KAFKA_VERSION" ]]; then
  exit 0
fi

for tool in java mvn; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "kafka_jars.sh: '$tool' not found; install a JDK 17+ and Maven (e.g. apt-get install -y openjdk-17-jdk-headless maven)" >&2
    exit 1
  fi
done

echo "kafka_jars.sh: fetching Kafka $KAFKA_VERSION jars into $LIB_DIR" >&2
# Drop jars of other versions (e.g. after a version bump) so 'lib/*' holds one classpath.
rm -rf "$LIB_DIR"
# Debian's Maven 3.8 prints bare ANSI resets even with -B/-q: strip them (pipefail keeps mvn's status).
mvn -q -B -f "$POM_DIR/pom.xml" package 2>&1 | sed -e 's/\x1b\[[0-9;]*m//g' -e '/^[[:space:]]*$/d' >&2
touch "$LIB_DIR/.complete-$KAFKA_VERSION"
echo "kafka_jars.sh: $(ls "$LIB_DIR"/*.jar | wc -l) jars in $LIB_DIR" >&2

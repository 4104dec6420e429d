#!/usr/bin/env bash
# brokers.sh starts real message brokers as native processes on 127.0.0.1, for
# machines without a Docker engine (Debian 12, run as root; no systemd needed).
#
#   scripts/brokers.sh up     [service...]   install if missing, start, wait until ready
#   scripts/brokers.sh down   [service...]   stop
#   scripts/brokers.sh status [service...]   print "<service> ready|down"; non-zero if any is down
#   scripts/brokers.sh env                   print the endpoints as shell export lines
#   scripts/brokers.sh classpath kafka       print the Java classpath of the installed Kafka
#                                            (its client jars, for tests that drive a Java client)
#
# Services: rabbitmq kafka sqs redis postgres (default: all five).
#   rabbitmq  RabbitMQ from Debian's rabbitmq-server package, guest/guest on 5672
#   kafka     Apache Kafka (single-node KRaft) from Maven Central jars, 9092 (controller 9093)
#   sqs       ElasticMQ from Maven Central jars, SQS JSON/query API on 9324
#   redis     Debian's redis-server, 6379
#   postgres  Debian's PostgreSQL cluster, 5432, user/password/database brokerkit
#
# Downloads (Maven jars), data and logs live under $BROKERKIT_CACHE
# (default ~/.cache/brokerkit), outside the checkout, so a second "up" is fast.
# Progress goes to stderr; "env" writes only export lines to stdout.
set -euo pipefail

readonly ALL_SERVICES=(rabbitmq kafka sqs redis postgres)

readonly KAFKA_VERSION="${BROKERKIT_KAFKA_VERSION:-4.4.0}"
readonly ELASTICMQ_VERSION="${BROKERKIT_ELASTICMQ_VERSION:-1.7.1}"
readonly LOG4J_VERSION=2.25.5 # log4j-slf4j-impl binding for Kafka's slf4j 1.7 logging
readonly PG_VERSION="${BROKERKIT_PG_VERSION:-15}"
readonly DEPENDENCY_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.8.1

readonly HOST=127.0.0.1
readonly AMQP_PORT=5672 KAFKA_PORT=9092 KAFKA_CONTROLLER_PORT=9093 SQS_PORT=9324
readonly REDIS_PORT=6379 PG_PORT=5432
readonly PG_USER=brokerkit PG_PASSWORD=brokerkit PG_DB=brokerkit

CACHE="${BROKERKIT_CACHE:-${HOME:?set HOME or BROKERKIT_CACHE}/.cache/brokerkit}"
readonly CACHE
readonly LOGS="$CACHE/logs" RUN="$CACHE/run"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR

# ---------------------------------------------------------------------------
# helpers

log() { printf 'brokers: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# tcp_open HOST PORT: true when something accepts a TCP connection.
tcp_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

# pid_alive PIDFILE PATTERN: true when the pid in PIDFILE runs a command line matching PATTERN.
pid_alive() {
	local pid
	[[ -s $1 ]] || return 1
	pid="$(<"$1")"
	[[ -r /proc/$pid/cmdline ]] || return 1
	tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$2"
}

# stop_pid NAME PIDFILE PATTERN: TERM, wait up to 30s, then KILL.
stop_pid() {
	local name=$1 pidfile=$2 pattern=$3 pid i
	if ! pid_alive "$pidfile" "$pattern"; then
		rm -f "$pidfile"
		return 0
	fi
	pid="$(<"$pidfile")"
	log "$name: stopping pid $pid"
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 300; i++)); do
		[[ -d /proc/$pid ]] || break
		sleep 0.1
	done
	if [[ -d /proc/$pid ]]; then
		log "$name: still running after 30s, killing"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$pidfile"
}

# start_detached PIDFILE LOGFILE CMD...: run CMD in its own session, survive this shell.
start_detached() {
	local pidfile=$1 logfile=$2
	shift 2
	: >"$logfile"
	# The inner shell records its own pid and then execs CMD, so the pid is CMD's.
	# shellcheck disable=SC2016 # $$ and $@ belong to the inner shell
	rm -f "$pidfile"
	setsid bash -c 'echo $$ >"$0.tmp" && mv "$0.tmp" "$0"; exec "$@"' "$pidfile" "$@" \
		</dev/null >>"$logfile" 2>&1 &
	# Callers check liveness through the pid file at once: wait until it exists.
	local i
	for ((i = 0; i < 50; i++)); do
		[[ -s $pidfile ]] && return 0
		sleep 0.1
	done
	log "no pid file $pidfile 5s after start; see $logfile"
	tail -n 40 "$logfile" >&2
	exit 1
}

# wait_ready SERVICE SECONDS: poll <service>_ready until it succeeds; on timeout or when
# the process died, print the log tail and fail.
wait_ready() {
	local svc=$1 secs=$2 deadline grace
	deadline=$((SECONDS + secs))
	# A detached start (rabbitmq-server -detached) may not show its process at
	# once: "not running" means "exited" only after a few seconds.
	grace=$((SECONDS + 10))
	until "${svc}_ready"; do
		if ((SECONDS >= grace)) && ! "${svc}_running"; then
			fail_with_log "$svc" "process exited during start-up"
		fi
		if ((SECONDS >= deadline)); then
			fail_with_log "$svc" "not ready after ${secs}s"
		fi
		sleep 1
	done
	log "$svc: ready"
}

fail_with_log() {
	local svc=$1 why=$2 f
	log "$svc: $why; last lines of its log:"
	for f in $("${svc}_logs"); do
		[[ -r $f ]] || continue
		printf -- '--- %s\n' "$f" >&2
		tail -n 40 "$f" >&2
	done
	# Leave no half-started process behind: the next "up" starts from clean.
	"${svc}_stop" || true
	die "$svc did not start"
}

# ---------------------------------------------------------------------------
# packages and jars

# apt_install PKG...: install the packages that are missing, with apt-get update at most once.
APT_UPDATED=
apt_install() {
	local missing=() p
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	((${#missing[@]})) || return 0
	[[ $(id -u) == 0 ]] || die "missing Debian packages ${missing[*]}: run as root or install them"
	log "installing ${missing[*]}"
	# Keep apt from starting services through init scripts: this script starts them,
	# bound to 127.0.0.1. An existing policy-rc.d is left as it is.
	local policy=/usr/sbin/policy-rc.d ours=
	if [[ ! -e $policy ]]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod 755 "$policy"
		ours=1
		trap 'rm -f /usr/sbin/policy-rc.d' EXIT
	fi
	local aptlog="$LOGS/apt.log"
	if [[ -z $APT_UPDATED ]]; then
		apt-get update -qq >"$aptlog" 2>&1 || { tail -n 40 "$aptlog" >&2; die "apt-get update failed"; }
		APT_UPDATED=1
	fi
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
		-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
		"${missing[@]}" >>"$aptlog" 2>&1 || { tail -n 40 "$aptlog" >&2; die "apt-get install ${missing[*]} failed"; }
	if [[ -n $ours ]]; then
		rm -f "$policy"
		trap - EXIT
	fi
}

# Debian packages needed by each service.
packages_rabbitmq() { echo rabbitmq-server; }
packages_kafka() { echo openjdk-17-jdk-headless maven; }
packages_sqs() { echo openjdk-17-jdk-headless maven curl; }
packages_redis() { echo redis-server redis-tools; }
packages_postgres() { echo "postgresql-$PG_VERSION" postgresql-client-common; }

# maven_fetch DIR STAMP DEPENDENCY-XML: copy the runtime jars of the given dependencies into
# DIR/libs, unless DIR/libs/.stamp already says STAMP. The Maven repository lives in the cache.
maven_fetch() {
	local dir=$1 stamp=$2 deps=$3
	if [[ -f $dir/libs/.stamp && $(<"$dir/libs/.stamp") == "$stamp" ]]; then
		return 0
	fi
	log "fetching $stamp from Maven Central"
	mkdir -p "$dir"
	cat >"$dir/pom.xml" <<-EOF
		<project xmlns="http://maven.apache.org/POM/4.0.0">
		  <modelVersion>4.0.0</modelVersion>
		  <groupId>brokerkit.local</groupId>
		  <artifactId>$(basename "$dir")-jars</artifactId>
		  <version>0</version>
		  <packaging>pom</packaging>
		  <dependencies>
		$deps
		  </dependencies>
		</project>
	EOF
	rm -rf "$dir/libs.new"
	local mvnlog="$LOGS/maven.log"
	if ! (cd "$dir" && mvn -B -q -Dmaven.repo.local="$CACHE/m2" \
		"$DEPENDENCY_PLUGIN:copy-dependencies" \
		-DincludeScope=runtime -DoutputDirectory="$dir/libs.new") >>"$mvnlog" 2>&1; then
		tail -n 40 "$mvnlog" >&2
		die "mvn could not fetch $stamp; the command ran in $dir (log: $mvnlog)"
	fi
	echo "$stamp" >"$dir/libs.new/.stamp"
	rm -rf "$dir/libs"
	mv "$dir/libs.new" "$dir/libs"
}

dep() { printf '    <dependency><groupId>%s</groupId><artifactId>%s</artifactId><version>%s</version></dependency>\n' "$@"; }

# ---------------------------------------------------------------------------
# RabbitMQ: Debian package, started with rabbitmq-server -detached (no systemd).
# The node is rabbit@localhost; AMQP, epmd and Erlang distribution listen on 127.0.0.1.

rabbitmq_configure() {
	mkdir -p /etc/rabbitmq
	cat >/etc/rabbitmq/rabbitmq-env.conf <<-EOF
		# Written by brokerkit scripts/brokers.sh: a loopback-only node for tests.
		NODENAME=rabbit@localhost
		NODE_IP_ADDRESS=$HOST
		NODE_PORT=$AMQP_PORT
		SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
		CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
		export ERL_EPMD_ADDRESS=$HOST
	EOF
	cat >/etc/rabbitmq/rabbitmq.conf <<-EOF
		# Written by brokerkit scripts/brokers.sh: a loopback-only node for tests.
		listeners.tcp.default = $HOST:$AMQP_PORT
		loopback_users.guest = true
		log.file.level = info
	EOF
}

rabbitmq_prepare() { rabbitmq_configure; }

rabbitmq_env() {
	export RABBITMQ_NODENAME=rabbit@localhost ERL_EPMD_ADDRESS=$HOST
}

rabbitmq_running() { pgrep -f 'beam.*-s rabbit boot' >/dev/null; }

# RabbitMQ 3.10 (Debian's 3.10.8) runs the at-least-once dead-letter workers of quorum queues
# under a supervisor that gives up after two crashes in five seconds (intensity 1, period 5),
# and a worker crashes when its queue is deleted as it starts. With the supervisor gone, every
# quorum queue with at-least-once dead-lettering fails to declare (INTERNAL_ERROR) until the
# node restarts: the test suite, which creates and deletes such queues by the hundred, hit it
# (rabbit_fifo_dlx_sup "reached_max_restart_intensity" in the node's log). Later releases give
# that supervisor 100 restarts a second; rabbitmq_ready sets the same on the running node
# (patched, or {ok,Intensity,Period} when already done) and is not ready while it is down.
readonly RABBITMQ_DLX_SUP='case whereis(rabbit_fifo_dlx_sup) of
	undefined -> down;
	_ -> case sys:get_state(rabbit_fifo_dlx_sup) of
		{state,_,simple_one_for_one,_,_,I,_,_,_,_,rabbit_fifo_dlx_sup,_} when I < 100 ->
			sys:replace_state(rabbit_fifo_dlx_sup, fun(S) -> setelement(7, setelement(6, S, 100), 1) end),
			patched;
		{state,_,_,_,_,I,P,_,_,_,_,_} -> {ok,I,P};
		_ -> unknown
	end
end.'

rabbitmq_ready() {
	tcp_open "$HOST" "$AMQP_PORT" || return 1
	(rabbitmq_env && timeout 30 rabbitmqctl -q await_startup --timeout 20) >/dev/null 2>&1 || return 1
	local dlx
	dlx=$(rabbitmq_env && timeout 20 rabbitmqctl -q eval "$RABBITMQ_DLX_SUP" 2>/dev/null) || return 1
	if [[ $dlx == down ]]; then
		log "rabbitmq: the dead-letter supervisor is down (see RABBITMQ_DLX_SUP); restart the node: $0 down rabbitmq && $0 up rabbitmq"
		return 1
	fi
}

rabbitmq_start() {
	rabbitmq_env
	# Each quorum queue holds files open, so the node needs more than the 1024 descriptors
	# that Debian's wrapper leaves it (it switches user with su, whose PAM session resets
	# the limit). As root, switch user with setpriv instead, which keeps the raised limit.
	if [[ $(id -u) == 0 ]] && command -v setpriv >/dev/null && id rabbitmq >/dev/null 2>&1; then
		(ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
			cd /var/lib/rabbitmq &&
			HOME=/var/lib/rabbitmq exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups \
				rabbitmq-server -detached) >&2
	else
		rabbitmq-server -detached >&2
	fi
}

rabbitmq_stop() {
	rabbitmq_running || return 0
	log "rabbitmq: stopping"
	(rabbitmq_env && timeout 60 rabbitmqctl -q shutdown) >&2 || true
	# Fallback when the CLI could not reach the node: the pid file the node writes.
	stop_pid rabbitmq /var/lib/rabbitmq/mnesia/rabbit@localhost.pid 'beam'
}

rabbitmq_logs() { ls /var/log/rabbitmq/rabbit@localhost.log /var/log/rabbitmq/startup_err /var/log/rabbitmq/startup_log 2>/dev/null || true; }

# ---------------------------------------------------------------------------
# Kafka: single node, broker and controller in one JVM (KRaft), from Maven Central jars.

readonly KAFKA_DIR="$CACHE/kafka"

kafka_prepare() {
	maven_fetch "$KAFKA_DIR" "kafka_2.13-$KAFKA_VERSION" \
		"$(dep org.apache.kafka kafka_2.13 "$KAFKA_VERSION")
$(dep org.apache.logging.log4j log4j-slf4j-impl "$LOG4J_VERSION")"
	mkdir -p "$KAFKA_DIR/config"
	cat >"$KAFKA_DIR/config/server.properties" <<-EOF
		process.roles=broker,controller
		node.id=1
		controller.quorum.voters=1@$HOST:$KAFKA_CONTROLLER_PORT
		listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT
		advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT
		controller.listener.names=CONTROLLER
		inter.broker.listener.name=PLAINTEXT
		listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
		log.dirs=$KAFKA_DIR/data
		num.partitions=3
		default.replication.factor=1
		min.insync.replicas=1
		offsets.topic.replication.factor=1
		transaction.state.log.replication.factor=1
		transaction.state.log.min.isr=1
		share.coordinator.state.topic.replication.factor=1
		share.coordinator.state.topic.min.isr=1
		group.initial.rebalance.delay.ms=0
		auto.create.topics.enable=true
		delete.topic.enable=true
	EOF
	cat >"$KAFKA_DIR/config/log4j2.properties" <<-'EOF'
		status = warn
		appender.out.type = Console
		appender.out.name = OUT
		appender.out.layout.type = PatternLayout
		appender.out.layout.pattern = [%d] %p %m (%c)%n
		rootLogger.level = INFO
		rootLogger.appenderRef.out.ref = OUT
		logger.kafka.name = kafka
		logger.kafka.level = INFO
		logger.apache.name = org.apache.kafka
		logger.apache.level = INFO
	EOF
	cat >"$KAFKA_DIR/config/log4j2-quiet.properties" <<-'EOF'
		status = error
		appender.err.type = Console
		appender.err.name = ERR
		appender.err.target = SYSTEM_ERR
		appender.err.layout.type = PatternLayout
		appender.err.layout.pattern = %p %m%n
		rootLogger.level = ERROR
		rootLogger.appenderRef.err.ref = ERR
	EOF
}

kafka_java() {
	java -Xmx512m -Xms256m -XX:+UseG1GC -Djava.awt.headless=true \
		-Dlog4j2.configurationFile="$KAFKA_DIR/config/log4j2.properties" \
		-cp "$KAFKA_DIR/libs/*" "$@"
}

# kafka_format: format the KRaft storage once; a directory that fails to format is wiped
# and formatted again.
kafka_format() {
	local data="$KAFKA_DIR/data" id
	[[ -f $data/meta.properties ]] && return 0
	id="$(kafka_java kafka.tools.StorageTool random-uuid 2>>"$LOGS/kafka-format.log")"
	if ! kafka_java kafka.tools.StorageTool format -t "$id" \
		-c "$KAFKA_DIR/config/server.properties" >>"$LOGS/kafka-format.log" 2>&1; then
		log "kafka: formatting $data failed, wiping it and trying again"
		rm -rf "$data"
		kafka_java kafka.tools.StorageTool format -t "$id" \
			-c "$KAFKA_DIR/config/server.properties" >>"$LOGS/kafka-format.log" 2>&1 ||
			fail_with_log kafka "storage format failed"
	fi
}

kafka_running() { pid_alive "$RUN/kafka.pid" 'kafka.Kafka'; }

# kafka_ready: the JVM logged "Kafka Server started" and answers a metadata request.
kafka_ready() {
	kafka_running || return 1
	grep -q 'Kafka Server started' "$LOGS/kafka.log" 2>/dev/null || return 1
	tcp_open "$HOST" "$KAFKA_PORT" || return 1
	timeout 30 java -Dlog4j2.configurationFile="$KAFKA_DIR/config/log4j2-quiet.properties" \
		-cp "$KAFKA_DIR/libs/*" "$SCRIPT_DIR/KafkaReady.java" "$HOST:$KAFKA_PORT" >/dev/null 2>&1
}

kafka_start() {
	kafka_format
	start_detached "$RUN/kafka.pid" "$LOGS/kafka.log" \
		java -Xmx512m -Xms256m -XX:+UseG1GC -Djava.awt.headless=true \
		-Dlog4j2.configurationFile="$KAFKA_DIR/config/log4j2.properties" \
		-cp "$KAFKA_DIR/libs/*" kafka.Kafka "$KAFKA_DIR/config/server.properties"
}

kafka_stop() { stop_pid kafka "$RUN/kafka.pid" 'kafka.Kafka'; }
kafka_logs() { echo "$LOGS/kafka-format.log" "$LOGS/kafka.log"; }

# ---------------------------------------------------------------------------
# SQS: ElasticMQ from Maven Central jars, strict SQS limits, region us-east-1.

readonly SQS_DIR="$CACHE/elasticmq"

sqs_prepare() {
	maven_fetch "$SQS_DIR" "elasticmq-server_2.13-$ELASTICMQ_VERSION" \
		"$(dep org.elasticmq elasticmq-server_2.13 "$ELASTICMQ_VERSION")"
	cat >"$SQS_DIR/elasticmq.conf" <<-EOF
		include classpath("application.conf")
		node-address {
		  protocol = http
		  host = "$HOST"
		  port = $SQS_PORT
		  context-path = ""
		}
		rest-sqs {
		  enabled = true
		  bind-hostname = "$HOST"
		  bind-port = $SQS_PORT
		  sqs-limits = strict
		}
		generate-node-address = false
		aws {
		  region = us-east-1
		  accountId = "000000000000"
		}
	EOF
}

sqs_running() { pid_alive "$RUN/elasticmq.pid" 'org.elasticmq.server.Main'; }

# sqs_ready: a ListQueues call in the JSON protocol, as aws-sdk-go-v2 sends it, succeeds.
sqs_ready() {
	curl -sf -m 3 -o /dev/null -X POST "http://$HOST:$SQS_PORT/" \
		-H 'Content-Type: application/x-amz-json-1.0' \
		-H 'X-Amz-Target: AmazonSQS.ListQueues' -d '{}'
}

sqs_start() {
	start_detached "$RUN/elasticmq.pid" "$LOGS/elasticmq.log" \
		java -Xmx256m -Xms64m -XX:+UseSerialGC -Djava.awt.headless=true \
		-Dconfig.file="$SQS_DIR/elasticmq.conf" \
		-cp "$SQS_DIR/libs/*" org.elasticmq.server.Main
}

sqs_stop() { stop_pid sqs "$RUN/elasticmq.pid" 'org.elasticmq.server.Main'; }
sqs_logs() { echo "$LOGS/elasticmq.log"; }

# ---------------------------------------------------------------------------
# Redis: Debian's redis-server, no persistence.

redis_prepare() { mkdir -p "$CACHE/redis"; }

redis_running() { pid_alive "$RUN/redis.pid" 'redis-server'; }

redis_ready() { [[ $(timeout 3 redis-cli -h "$HOST" -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]; }

redis_start() {
	: >"$LOGS/redis.log"
	redis-server --daemonize yes --bind "$HOST" --port "$REDIS_PORT" --protected-mode yes \
		--dir "$CACHE/redis" --logfile "$LOGS/redis.log" --pidfile "$RUN/redis.pid" \
		--save '' --appendonly no >&2
}

redis_stop() {
	if redis_ready; then
		log "redis: stopping"
		redis-cli -h "$HOST" -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
	fi
	stop_pid redis "$RUN/redis.pid" 'redis-server'
}

redis_logs() { echo "$LOGS/redis.log"; }

# ---------------------------------------------------------------------------
# PostgreSQL: Debian's cluster $PG_VERSION/main, started with pg_ctlcluster.

readonly PG_CONF_DIR="/etc/postgresql/$PG_VERSION/main"

postgres_prepare() {
	if [[ ! -d $PG_CONF_DIR ]]; then
		log "postgres: creating cluster $PG_VERSION/main"
		pg_createcluster "$PG_VERSION" main >&2
	fi
	mkdir -p "$PG_CONF_DIR/conf.d"
	cat >"$PG_CONF_DIR/conf.d/brokerkit.conf" <<-EOF
		# Written by brokerkit scripts/brokers.sh: loopback only.
		listen_addresses = '$HOST'
		port = $PG_PORT
	EOF
	ln -sf "/var/log/postgresql/postgresql-$PG_VERSION-main.log" "$LOGS/postgres.log"
}

postgres_running() { pg_lsclusters -h "$PG_VERSION" main 2>/dev/null | grep -q online; }

# postgres_ready: the server accepts the brokerkit user's password login.
postgres_ready() {
	PGPASSWORD=$PG_PASSWORD PGCONNECT_TIMEOUT=3 psql -h "$HOST" -p "$PG_PORT" -U "$PG_USER" \
		-d "$PG_DB" -Atqc 'select 1' >/dev/null 2>&1
}

postgres_start() {
	local i
	if ! postgres_running; then
		pg_ctlcluster "$PG_VERSION" main start >&2 || fail_with_log postgres "pg_ctlcluster start failed"
	fi
	for ((i = 0; ; i++)); do
		pg_isready -q -h "$HOST" -p "$PG_PORT" && break
		((i < 30)) || fail_with_log postgres "no connections accepted after 30s"
		sleep 1
	done
	# Role and database, created once; the password is reset so the URL always works.
	(cd / && runuser -u postgres -- psql -p "$PG_PORT" -v ON_ERROR_STOP=1 -q) >&2 <<-EOF
		SELECT format('CREATE ROLE %I LOGIN', '$PG_USER')
		 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$PG_USER') \gexec
		ALTER ROLE $PG_USER WITH LOGIN PASSWORD '$PG_PASSWORD';
		SELECT format('CREATE DATABASE %I OWNER %I', '$PG_DB', '$PG_USER')
		 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '$PG_DB') \gexec
	EOF
}

postgres_stop() {
	postgres_running || return 0
	log "postgres: stopping"
	pg_ctlcluster "$PG_VERSION" main stop -m fast >&2
}

postgres_logs() { echo "/var/log/postgresql/postgresql-$PG_VERSION-main.log"; }

# ---------------------------------------------------------------------------
# commands

# Seconds each service may take to become ready, and the ports it listens on.
declare -A DEADLINE=([rabbitmq]=120 [kafka]=120 [sqs]=60 [redis]=20 [postgres]=60)
declare -A PORTS=([rabbitmq]="$AMQP_PORT" [kafka]="$KAFKA_PORT $KAFKA_CONTROLLER_PORT"
	[sqs]="$SQS_PORT" [redis]="$REDIS_PORT" [postgres]="$PG_PORT")

# check_ports_free SERVICE: fail at once when another program holds one of its ports,
# rather than waiting for a start-up that cannot bind.
check_ports_free() {
	local svc=$1 port
	for port in ${PORTS[$svc]}; do
		if tcp_open "$HOST" "$port"; then
			log "$svc: $HOST:$port is taken by another program:"
			ss -ltnpH "sport = :$port" >&2 || true
			die "$svc cannot start"
		fi
	done
}

cmd_up() {
	local svc pkgs=() started=()
	mkdir -p "$LOGS" "$RUN"
	for svc in "$@"; do
		# shellcheck disable=SC2207
		pkgs+=($("packages_$svc"))
	done
	apt_install "${pkgs[@]}"
	for svc in "$@"; do
		"${svc}_prepare"
	done
	# Start everything first, then wait: the slow JVM and Erlang start-ups overlap.
	for svc in "$@"; do
		if "${svc}_ready"; then
			log "$svc: already ready"
			continue
		fi
		"${svc}_running" || check_ports_free "$svc"
		log "$svc: starting"
		"${svc}_start"
		started+=("$svc")
	done
	for svc in "${started[@]}"; do
		wait_ready "$svc" "${DEADLINE[$svc]}"
	done
}

cmd_down() {
	local svc
	for svc in "$@"; do
		"${svc}_stop"
	done
}

cmd_status() {
	local svc down=0
	for svc in "$@"; do
		if "${svc}_ready"; then
			printf '%-9s ready\n' "$svc"
		else
			printf '%-9s down\n' "$svc"
			down=1
		fi
	done
	return "$down"
}

cmd_env() {
	cat <<-EOF
		export BROKERKIT_AMQP_URL=amqp://guest:guest@$HOST:$AMQP_PORT/
		export BROKERKIT_KAFKA_BROKERS=$HOST:$KAFKA_PORT
		export BROKERKIT_SQS_ENDPOINT=http://$HOST:$SQS_PORT
		export BROKERKIT_REDIS_URL=redis://$HOST:$REDIS_PORT/0
		export BROKERKIT_POSTGRES_URL='postgres://$PG_USER:$PG_PASSWORD@$HOST:$PG_PORT/$PG_DB?sslmode=disable'
	EOF
}

# cmd_classpath kafka: the classpath of the installed Kafka's jars; fails when
# Kafka is not installed.
cmd_classpath() {
	[[ $# == 1 && $1 == kafka ]] || die "classpath: only kafka has one"
	[[ -d $KAFKA_DIR/libs ]] || die "classpath: Kafka is not installed under $KAFKA_DIR (scripts/brokers.sh up kafka)"
	echo "$KAFKA_DIR/libs/*"
}

usage() {
	sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
	exit 2
}

main() {
	(($#)) || usage
	local cmd=$1 svc
	shift
	(($#)) || set -- "${ALL_SERVICES[@]}"
	for svc in "$@"; do
		[[ " ${ALL_SERVICES[*]} " == *" $svc "* ]] ||
			die "unknown service $svc (known: ${ALL_SERVICES[*]})"
	done
	case $cmd in
	up | down)
		# One "up" or "down" at a time: two concurrent starts of one broker
		# would race for its ports and its pid file.
		# (-o: the brokers this run starts must not inherit the lock.)
		if [[ ${BROKERKIT_BROKERS_LOCKED:-} != 1 ]]; then
			mkdir -p "$RUN"
			BROKERKIT_BROKERS_LOCKED=1 exec flock -o -w 600 "$RUN/.lock" bash "${BASH_SOURCE[0]}" "$cmd" "$@"
		fi
		"cmd_$cmd" "$@"
		;;
	status) cmd_status "$@" ;;
	env) cmd_env ;;
	classpath) cmd_classpath "$@" ;;
	-h | --help | help) usage ;;
	*) log "unknown command $cmd"; usage ;;
	esac
}

main "$@"

# Shared by the scripts that start a local emulator (sourced, not run).

# A free TCP port on 127.0.0.1.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_until_up NAME PID LOG CURL_ARGS...: polls with curl until the emulator answers;
# fails if its process exits or it does not answer within 30 s.
wait_until_up() {
    local name=$1 pid=$2 log=$3
    shift 3
    for _ in $(seq 1 60); do
        curl -fs -o /dev/null "$@" && return 0
        kill -0 "$pid" 2>/dev/null || { echo "error: $name exited; see $log" >&2; return 1; }
        sleep 0.5
    done
    echo "error: $name did not answer within 30 s; see $log" >&2
    return 1
}

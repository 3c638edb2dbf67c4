#!/usr/bin/env bash
# A real SLURM cluster test of profiles/slurm (run by .ci/run; run it yourself as root
# with the project's venv active: `bash tests/cluster/slurm_test.sh`).
#
# 1. Installs slurm-wlm + munge from Debian if missing (idempotent).
# 2. Starts a one-node cluster on localhost in a temp dir: its own munged (own key and
#    socket), slurmctld and slurmd, with one fake GPU (gres gpu:1 backed by /dev/null),
#    no slurmdbd, no systemd.
# 3. Runs a slice of the DAG on the tiny config twice, each in its own copy of the
#    workflow: locally (`--cores 2`, profiles/default) and through
#    `--workflow-profile profiles/slurm` with CI overrides (partition, status command).
#    The slice: train_organism and extract_activations (GPU rules), organism_prompts and
#    build_masks (CPU rules).
# 4. tests/cluster/check.py compares the results file by file and checks, from
#    `scontrol -d show job` records and from the environment every job step started with
#    (a TaskProlog records it), that the GPU rules' jobs were given the GPU and the CPU
#    rules' jobs were not.
# Every daemon started here is stopped by PID on exit.
set -euo pipefail
if [ "$(id -u)" != 0 ]; then
    echo "[slurm-test] skipped: needs root (apt-get install, slurmd)"
    exit 0
fi

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
T0=$(date +%s)
PYTHON="$(command -v python)"
TARGETS=(results/organism-tiny/activations/organism.h5 results/organism-tiny/masks/L2.h5)
PARTITION=zhuntci

log() { echo "[slurm-test +$(( $(date +%s) - T0 ))s] $*"; }

# --- 1. install ------------------------------------------------------------------------
missing=0
for bin in slurmctld slurmd slurmstepd sbatch squeue scontrol munged mungekey; do
    command -v "$bin" >/dev/null 2>&1 || missing=1
done
if [ "$missing" = 1 ]; then
    log "installing slurm-wlm and munge"
    # keep apt from starting the packages' system services (no systemd here anyway)
    added_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
        added_policy=1
    fi
    apt_rc=0
    out="$(apt-get update -qq 2>&1 && DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq slurm-wlm munge 2>&1)" || apt_rc=$?
    if [ "$added_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
    if [ "$apt_rc" != 0 ]; then echo "$out" | tail -n 30; exit 1; fi
fi
log "$(slurmctld -V), $(munged --version)"

# --- 2. a one-node cluster in a temp dir -------------------------------------------------
T="$(mktemp -d /tmp/zhunt-slurm.XXXXXX)"
chmod 755 "$T"
DAEMONS=()   # munged, slurmctld, slurmd: own sessions (setsid), so a Ctrl-C reaches only us
RUNS=()      # the two snakemake runs (each under `timeout`, its own process group)
stop_pid() {  # stop_pid SIGNAL SECONDS PID: signal, wait, then SIGKILL
    kill -0 "$3" 2>/dev/null || return 0
    kill -s "$1" "$3" 2>/dev/null || true
    for _ in $(seq $(($2 * 10))); do kill -0 "$3" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$3" 2>/dev/null || true
}
cleanup() {
    rc=$?
    trap '' INT TERM
    # 1. the snakemake runs: INT, which `timeout` forwards (snakemake ignores TERM while
    #    jobs run); the SLURM one cancels its jobs while the cluster is still up
    for pid in "${RUNS[@]}"; do stop_pid INT 60 "$pid"; done
    # 2. jobs still on this cluster, then the daemons, newest first
    if [ "${#DAEMONS[@]}" = 3 ]; then
        jobs_left="$(timeout 10 squeue -h -o %i 2>/dev/null || true)"
        if [ -n "$jobs_left" ]; then
            timeout 10 scancel $jobs_left 2>/dev/null || true
            for _ in $(seq 30); do
                [ -z "$(timeout 10 squeue -h -o %i 2>/dev/null)" ] && break
                sleep 0.5
            done
        fi
    fi
    for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do stop_pid TERM 10 "${DAEMONS[i]}"; done
    if [ "$rc" != 0 ]; then
        echo "[slurm-test] FAILED (rc=$rc); logs:"
        for f in "$T"/log/*.log "$T"/slurm/.snakemake/slurm_logs/*/*/*.log; do
            [ -f "$f" ] && { echo "--- $f"; tail -n 40 "$f"; }
        done
    fi
    if [ -n "${ZHUNT_SLURM_KEEP:-}" ]; then echo "[slurm-test] kept $T"; else rm -rf "$T"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$T"/{etc,log,state,spool,munge}
read -r CTLD_PORT SLURMD_PORT < <("$PYTHON" - <<'EOF'
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
EOF
)

# munge: own key and socket, so a system munged (if any) is left alone
mungekey --create --keyfile="$T/munge/munge.key" --force >/dev/null
chmod 600 "$T/munge/munge.key"
setsid munged --foreground --force --key-file="$T/munge/munge.key" --socket="$T/munge/munge.sock" \
    --pid-file="$T/munge/munged.pid" --seed-file="$T/munge/seed" \
    --log-file="$T/log/munged.log" 2>"$T/log/munged.out" &
DAEMONS+=($!)

# the environment every job step starts with (TaskProlog runs in it, as the job's user)
cat > "$T/etc/task_prolog.sh" <<EOF
#!/bin/sh
echo "\$SLURM_JOB_ID \${SLURM_STEP_ID:-batch} SLURM_JOB_GPUS=\${SLURM_JOB_GPUS:-} SLURM_STEP_GPUS=\${SLURM_STEP_GPUS:-} CUDA_VISIBLE_DEVICES=\${CUDA_VISIBLE_DEVICES:-unset}" >> "$T/log/task_env.txt"
EOF
chmod +x "$T/etc/task_prolog.sh"

cat > "$T/etc/slurm.conf" <<EOF
ClusterName=zhuntci
SlurmctldHost=localhost
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$T/munge/munge.sock
StateSaveLocation=$T/state
SlurmdSpoolDir=$T/spool
SlurmctldPidFile=$T/slurmctld.pid
SlurmdPidFile=$T/slurmd.pid
SlurmctldLogFile=$T/log/slurmctld.log
SlurmdLogFile=$T/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
TaskProlog=$T/etc/task_prolog.sh
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=600
DefMemPerCPU=500
GresTypes=gpu
NodeName=localhost CPUs=4 RealMemory=16000 Gres=gpu:1 State=UNKNOWN
PartitionName=$PARTITION Nodes=localhost Default=NO MaxTime=60 State=UP
EOF
printf 'AutoDetect=off\nName=gpu File=/dev/null\n' > "$T/etc/gres.conf"
export SLURM_CONF="$T/etc/slurm.conf"
# Inside a job the jobstep plugin drops SLURM_* variables (SLURM_CONF too) before its
# `srun`; a real cluster has /etc/slurm/slurm.conf or configless DNS, this one has
# neither, so an `srun` first on PATH puts SLURM_CONF back.
mkdir -p "$T/bin"
printf '#!/bin/sh\nexport SLURM_CONF=%s\nexec %s "$@"\n' "$SLURM_CONF" "$(command -v srun)" > "$T/bin/srun"
chmod +x "$T/bin/srun"
export PATH="$T/bin:$PATH"

setsid slurmctld -D -i -f "$SLURM_CONF" >"$T/log/slurmctld.out" 2>&1 &
DAEMONS+=($!)
setsid slurmd -D -N localhost -f "$SLURM_CONF" >"$T/log/slurmd.out" 2>&1 &
DAEMONS+=($!)
state=""
for _ in $(seq 60); do
    for pid in "${DAEMONS[@]}"; do
        kill -0 "$pid" 2>/dev/null || { log "a daemon (pid $pid) exited"; exit 1; }
    done
    state="$(timeout 5 sinfo -h -p "$PARTITION" -o %T 2>/dev/null || true)"
    [ "$state" = idle ] && break
    sleep 1
done
[ "$state" = idle ] || { log "node never became idle (state '$state')"; exit 1; }
log "cluster up: $(sinfo -h -N -o '%N %T cpus=%c mem=%m gres=%G')"

# --- 3. the same slice, locally and through the SLURM profile -----------------------------
for run in local slurm; do
    mkdir -p "$T/$run"
    (cd "$ROOT" && tar cf - --exclude=resources/models --exclude='__pycache__' \
        Snakefile config.yaml workflow profiles resources envs tests/tiny) | tar xf - -C "$T/$run"
done

# The local run goes on in the background while the SLURM run (mostly waiting) goes on.
log "local run and SLURM run"
(cd "$T/local" && exec nice -n 5 timeout -s INT -k 60 600 "$PYTHON" -m snakemake \
    "${TARGETS[@]}" --cores 2 --configfile tests/tiny/config.yaml) >"$T/log/local.log" 2>&1 &
LOCAL_PID=$!
RUNS+=("$LOCAL_PID")

# Jobs run `python -m snakemake` with the submitting environment (sbatch --export=ALL),
# so they use this venv's python, PATH and SLURM_CONF. CI overrides: the partition (the
# cluster has no default one), squeue for job status (no slurmdbd, so no sacct) and a
# short first status check (MinJobAge=600 keeps finished jobs visible to squeue).
(cd "$T/slurm" && exec timeout -s INT -k 60 600 "$PYTHON" -m snakemake "${TARGETS[@]}" \
    --workflow-profile profiles/slurm --configfile tests/tiny/config.yaml \
    --default-resources slurm_partition=$PARTITION mem_mb=1000 runtime=10 \
    --slurm-status-command squeue --slurm-init-seconds-before-status-checks 2 \
    --slurm-keep-successful-logs) >"$T/log/slurm_run.log" 2>&1 &
SLURM_RUN_PID=$!
RUNS+=("$SLURM_RUN_PID")
wait "$SLURM_RUN_PID" || { log "SLURM run failed"; exit 1; }
log "SLURM run done"
wait "$LOCAL_PID" || { log "local run failed"; exit 1; }
log "local run done"

scontrol -d -o show job > "$T/log/jobs.txt"

# --- 4. checks ---------------------------------------------------------------------------
"$PYTHON" "$ROOT/tests/cluster/check.py" --local "$T/local" --slurm "$T/slurm" \
    --jobs "$T/log/jobs.txt" --task-env "$T/log/task_env.txt" \
    --run-log "$T/log/slurm_run.log" --partition "$PARTITION"
log "passed in $(( $(date +%s) - T0 ))s"

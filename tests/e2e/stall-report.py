#!/usr/bin/env python3
"""stall-report.py: says what a guest that stopped making progress was waiting for.

Usage: stall-report.py COUNTERS_JSON VCPUS_JSON [VCPUS_JSON_A_SECOND_LATER]
Reads godwit's GET /vm/counters and GET /vm/vcpus answers (files) and prints one line per
queue that holds work and per vCPU (and each device's own counts): requests the device has not taken, answers the driver has
not seen (and whether it was interrupted for them), and where each vCPU stands. With a second
GET /vm/vcpus, each vCPU's line says whether it moved in between.
"""
import json
import sys


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        print(f"stall: {path}: unreadable ({e})")
        return None


def queue_lines(name, q):
    qn = f"{name} queue {q['queue']}"
    taken = (q["avail_idx"] - q["last_avail_idx"]) & 0xFFFF
    if taken:
        # On a receive queue these are empty buffers: room for what the device has not sent.
        yield (f"{qn}: {taken} buffer(s) offered by the driver, not taken by the device "
               f"(kicks {q['kicks']}, last {q['last_kick_ms']} ms ago, "
               f"avail_event {q.get('avail_event')})")
    if "used_event" in q:
        unseen = (q["used_idx"] - q["used_event"]) & 0xFFFF
        # The driver sets used_event to what it has consumed when it waits for more.
        if unseen and unseen < 0x8000:
            yield (f"{qn}: used_idx {q['used_idx']} is {unseen} past the used_event "
                   f"{q['used_event']} the driver last set (answers it has not taken yet; "
                   f"interrupts sent {q.get('interrupts')}, the last {q.get('last_interrupt_ms')} "
                   f"ms ago; vector masked {q.get('vector_masked')}, pending "
                   f"{q.get('vector_pending')})")
    if q.get("broken"):
        yield f"{qn}: broken (the device needs a reset)"


def vcpu_line(v):
    lapic = v.get("lapic", {})
    return (f"{v.get('state')} at rip {v.get('rip')} rsp {v.get('rsp')} cpl {v.get('cpl')}, "
            f"interrupts {'on' if v.get('interrupts_enabled') else 'off'}, "
            f"apic irr {lapic.get('irr')} isr {lapic.get('isr')} tpr {lapic.get('tpr')}, "
            f"tsc {v.get('msrs', {}).get('tsc')} deadline {v.get('msrs', {}).get('tsc_deadline')}"
            + (f", exception {v.get('exception_vector')} pending (error code "
               f"{v.get('exception_error_code')})" if v.get("exception_pending") else ""))


def main():
    counters = load(sys.argv[1])
    vcpus = load(sys.argv[2])
    busy = False
    for name, dev in sorted((counters or {}).get("devices", {}).items()):
        # The device's own counts (a vsock's connections and unread bytes, a disk's requests).
        own = " ".join(f"{k} {v}" for k, v in dev.items() if isinstance(v, (int, float)))
        print(f"stall: {name}: {own}")
        for q in dev.get("queues", []):
            for line in queue_lines(name, q):
                busy = True
                print("stall:", line)
    if counters and not busy:
        print("stall: every virtqueue is idle: no request waits on a device, every answer was seen")
    later = {v.get("index"): v for v in (load(sys.argv[3]) or [])} if len(sys.argv) > 3 else {}
    for v in vcpus or []:
        print(f"stall: vcpu{v.get('index')}: {vcpu_line(v)}")
        w = later.get(v.get("index"))
        if w:
            same = all(w.get(k) == v.get(k) for k in ("rip", "rsp", "exception_pending"))
            print(f"stall: vcpu{v.get('index')} a second later: "
                  + ("the same place, " if same else "") + vcpu_line(w))


if __name__ == "__main__":
    main()

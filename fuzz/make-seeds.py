#!/usr/bin/env python3
"""Writes the committed seed corpus (fuzz/seeds/<target>/*): valid and nearly valid inputs
laid out as pv_fuzz::Input reads them, so that libFuzzer starts from the interesting
shapes instead of from nothing. Re-run after changing an input layout in src/lib.rs."""
import json, os, struct, hashlib

HERE = os.path.dirname(os.path.abspath(__file__))

def host(features=0x1007efb, exits=0xe, flags=0xf, mask=0):
    # flags u8 (halt_poll, enforce, stats, hyperv), features u32, allowed exits u8, mask u64
    return struct.pack("<BIBQ", flags, features, exits, mask)

def write(target, items):
    d = os.path.join(HERE, "seeds", target)
    os.makedirs(d, exist_ok=True)
    for data in items:
        name = hashlib.sha1(data).hexdigest()[:16]
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)

cpus = ["boot=4", "boot=2,max=8,topology=1:2:1:1", "boot=4,kvm_pv=off",
        "boot=4,kvm_pv=[steal_time,pv_tlb_flush,pv_send_ipi],dedicated=on",
        "boot=2,disable_exits=[hlt,pause],halt_poll_ns=0,enforce_pv_cpuid=off",
        "boot=2,affinity=[0@[0-3],1@[4,6]],core_scheduling=vcpu,features=[amx]",
        "boot=1,max_phys_bits=40,nested=off,kvm_hyperv=on", "boot=0", "max=1,boot=2",
        "kvm_pv=[pv_tlb_flush]", "disable_exits=[mwait,cstate]", "boot=4,dedicated=on,kvm_pv=[pv_unhalt]"]
write("cpus_option", [host() + bytes([4]) + c.encode() for c in cpus])

vm = {"cpus": {"boot_vcpus": 4, "max_vcpus": 4}, "memory": {"size": 536870912},
      "payload": {"kernel": "/k", "initramfs": "/i", "cmdline": "console=ttyS0"},
      "serial": {"mode": "Tty"}}
vms = [vm,
       {**vm, "cpus": {"boot_vcpus": 2, "max_vcpus": 2, "kvm_pv": {"dedicated": True, "halt_poll_ns": 0}}},
       {**vm, "cpus": {"boot_vcpus": 2, "max_vcpus": 2, "kvm_pv": {"features": ["steal_time", "pv_tlb_flush"], "disable_exits": ["hlt"]}}},
       {**vm, "cpus": {"boot_vcpus": 1, "max_vcpus": 1, "kvm_pv": {"features": "off", "enforce_pv_cpuid": False}}},
       {**vm, "serial": {"mode": "File", "file": "/tmp/s"}},
       {"cpus": {"boot_vcpus": 2, "max_vcpus": 2, "kvm_hyperv": False, "max_phys_bits": 46,
                 "features": {"amx": False}, "nested": True, "core_scheduling": "Vm", "profile": "Host"},
        "payload": {"kernel": "/k"}}]
items = [host() + bytes([2]) + struct.pack("<I", 0) + json.dumps(v).encode() for v in vms]
items.append(host() + bytes([2]) + struct.pack("<I", 0) + b'{"features":"all","dedicated":true}')
write("vm_config", items)

def hc(nr, args, long_mode=1, enforce=1, features=0x1007efb, max_apic=7, phys=46):
    return struct.pack("<BB6QIIB", long_mode | (enforce << 1), nr, *args, features, max_apic, phys)
write("send_ipi", [
    hc(10, [0xff, 0, 0, 0x40fe, 0, 0]),
    hc(10, [1 << 63, 1, 5, 0xfe, 0, 0]),
    hc(10, [0xffffffff, 0xffffffff, 0, 0xfe, 0, 0], long_mode=0),
    hc(10, [1, 0, 0xffffffff, 0x8fe, 0, 0]),
    hc(5, [0, 3, 0, 0, 0, 0]), hc(11, [2, 0, 0, 0, 0, 0]),
    hc(12, [0x1000, 1, 0x10, 0, 0, 0], features=1 << 16), hc(1, [0] * 6),
])

def st(msr, phys, gpa, regions, fill):
    return struct.pack("<QBQB", msr, phys, gpa, len(regions) - 1) + bytes(regions) + fill
record = struct.pack("<QII B", 12345, 2, 0, 1).ljust(64, b"\0")
write("steal_time", [
    st(0x2001, 46, 0x2000, [0x03], record),
    st(0x2001, 46, 0x2000, [0x03], struct.pack("<QI", 1, 3).ljust(64, b"\0")),
    st(0x3fc1, 46, 0x3fc0, [0x00], record),
    st(0x10001, 52, 0x10ff9, [0x00, 0x11], record),
    st(0x2003, 46, 0x2004, [0x00], record),
    st(0xffffffffffffffc1, 46, 0xfffffffffffffff8, [0x00], record),
])

def api(which, body):
    return host() + bytes([which]) + body
write("api_request", [
    api(0, b""), api(2, json.dumps(vm).encode()), api(11, b'{"halt_poll_ns":0}'),
    api(11, b'{"dedicated":true,"disable_exits":null}'),
    api(11, b'{"features":["steal_time","pv_tlb_flush"],"halt_poll_ns":null}'),
    api(11, b'{"features":"off","enforce_pv_cpuid":false}'), api(11, b'{}'),
    api(12, b"/api/v1/vm.pv\n{\"halt_poll_ns\":5}"), api(12, b"/api/v1/vm.info"),
    api(2, b"[]"), api(11, b'{"halt_poll_ns":-1}'),
])

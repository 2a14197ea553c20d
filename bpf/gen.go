package bpf

// The generated steer_bpfel.go and steer_bpfel.o are committed; CI re-runs
// this with Debian's clang-14 and fails when they change. -tags linux keeps
// the generated file (and its embedded object) Linux-only.
//go:generate go tool bpf2go -cc clang-14 -cflags "-O2 -g -Wall -Werror" -tags linux -target bpfel -type tuple_key -type sk_meta -type agent_info -type denial steer steer.c -- -I./include

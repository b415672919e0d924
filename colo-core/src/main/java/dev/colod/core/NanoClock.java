package dev.colod.core;

/** Injected time source, so tests can control time; production uses {@link System#nanoTime()}. */
@FunctionalInterface
public interface NanoClock
{
    NanoClock SYSTEM = System::nanoTime;

    long nanoTime();
}

//! Fault-injection harness for Cairn clusters.
//!
//! Not built yet: this crate will start real `cairn` processes, drive
//! concurrent clients, inject faults and check the recorded histories for
//! linearizability and watch guarantees.

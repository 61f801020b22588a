//! The lookup tables: the bridge's MAC table, the ARP neighbours, the routes (LPM), and
//! the cluster's peers with their routes and underlay index.

pub(crate) mod bridge;
pub(crate) mod neighbour;
pub(crate) mod peers;
pub(crate) mod routes;

//! Interface discovery: lists and watches host-side veths over rtnetlink (IO).

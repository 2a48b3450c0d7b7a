//! Sans-IO STUN/TURN wire codec.

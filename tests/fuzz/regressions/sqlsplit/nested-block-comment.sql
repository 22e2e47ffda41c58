SELECT /* a /* b */ c */ 1;
/* /* */